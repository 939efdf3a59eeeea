"""Reading Label Studio exports, judging each annotation, and resolving several into one answer.

Both export formats are read into the same :class:`ExportedTask` objects:

- **JSON** (``exportType=JSON``, also what the API export returns): one object per task, with every
  annotation, skipped ones (``was_cancelled``) included, each a list of result items
  ``{"from_name", "type", "value": {"text" | "choices": [...]}}``.
- **JSON_MIN**: one flat row per submitted annotation (skipped ones are not exported), holding the
  task's data fields, ``id`` (the task), ``annotator``, ``annotation_id``, timestamps,
  ``lead_time``, and one key per control: a string, or ``{"text" | "choices": [...]}`` when a
  control holds several values.

Nothing in an export is trusted: a result naming an unknown control, a result of the wrong type, or
a choice that is not offered is a *problem* of its task, reported with the task, never guessed at.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ecap.defects import DefectCodeError, grade, normalize_code

from .configs import Control, LabelConfig, TaskKind

Resolution = Literal["latest", "majority", "agree", "all"]
#: JSON_MIN keys that describe the annotation rather than the task's data.
MIN_ANNOTATION_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time"}
#: prefer tasks: the options that are not candidates.
NONE_OPTION, TIE_OPTION = "none", "tie"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Annotation:
    """One person's annotation of one task, as read from an export."""

    id: str
    annotator: str
    created_at: str | None
    updated_at: str | None
    lead_time: float | None
    cancelled: bool = False
    ground_truth: bool = False
    #: control name (ecap's) -> exported values (texts, or choices with aliases applied)
    values: dict[str, list[str]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def when(self) -> datetime:
        """When it was last saved: what "latest" means."""
        return parse_time(self.updated_at) or parse_time(self.created_at) or EPOCH

    def summary(self) -> dict[str, Any]:
        """What the store keeps about every annotation of a task, skipped ones included."""
        return {
            "annotation": self.id,
            "annotator": self.annotator,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "lead_time": self.lead_time,
            "skipped": self.cancelled,
            "ground_truth": self.ground_truth,
        }


@dataclass(frozen=True)
class ExportedTask:
    id: str
    data: dict[str, Any]
    created_at: str | None
    annotations: tuple[Annotation, ...]
    problems: tuple[str, ...] = ()
    raw: Any = None  # the task as exported, kept for the audit log

    @property
    def when(self) -> datetime:
        return parse_time(self.created_at) or EPOCH


@dataclass(frozen=True)
class BadRow:
    """An export entry that is not a task at all (not an object, no id)."""

    where: str
    message: str


def read_export(
    payload: Any,
    config: LabelConfig,
    *,
    names: Mapping[str, str] | None = None,
    users: Mapping[int, str] | None = None,
) -> list[ExportedTask | BadRow]:
    """Tasks (or bad rows) from a decoded JSON or JSON_MIN export.

    ``names`` maps control names used in the export to ecap's (for projects whose controls were
    named differently); ``users`` maps user ids to e-mail addresses.
    """
    if not isinstance(payload, list):
        return [BadRow("export", "an export is a JSON list of tasks")]
    reader = _Reader(config, dict(names or {}), dict(users or {}))
    order: list[ExportedTask | BadRow | str] = []  # a str: the id of a JSON_MIN task
    minimal: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for number, entry in enumerate(payload, start=1):
        if not isinstance(entry, dict):
            order.append(BadRow(f"entry {number}", "not a JSON object"))
        elif "annotations" in entry or "data" in entry:
            order.append(reader.task(entry))
        elif "id" in entry:
            key = str(entry["id"])
            if key not in minimal:
                minimal[key] = []
                order.append(key)
            minimal[key].append((number, entry))
        else:
            order.append(BadRow(f"entry {number}", "neither a task (no data) nor a JSON_MIN row"))
    return [reader.minimal_task(e, minimal[e]) if isinstance(e, str) else e for e in order]


class _Reader:
    def __init__(self, config: LabelConfig, names: dict[str, str], users: dict[int, str]) -> None:
        self.config = config
        self.names = names
        self.users = users
        #: export name -> ecap's control
        self.controls: dict[str, Control] = {
            next((theirs for theirs, ours in names.items() if ours == c.name), c.name): c
            for c in config.controls.values()
        }

    def annotator(self, value: Any) -> str:
        if isinstance(value, dict):
            value = value.get("email") or value.get("username") or value.get("id")
        if isinstance(value, bool) or value is None:
            return "unknown"
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return self.users.get(int(value), f"user:{value}")
        return str(value)

    def task(self, entry: dict[str, Any]) -> ExportedTask:
        task_id = str(entry.get("id", "?"))
        data = entry.get("data")
        problems: list[str] = []
        if not isinstance(data, dict):
            problems.append("the task has no data object")
            data = {}
        raw_annotations = entry.get("annotations", [])
        if not isinstance(raw_annotations, list):
            problems.append("'annotations' is not a list")
            raw_annotations = []
        annotations = []
        for number, raw in enumerate(raw_annotations, start=1):
            if not isinstance(raw, dict):
                problems.append(f"annotation {number} is not a JSON object")
                continue
            values, found = self.result(raw.get("result", []))
            annotations.append(
                Annotation(
                    id=str(raw.get("id", f"#{number}")),
                    annotator=self.annotator(raw.get("completed_by")),
                    created_at=raw.get("created_at"),
                    updated_at=raw.get("updated_at"),
                    lead_time=_number(raw.get("lead_time")),
                    cancelled=bool(raw.get("was_cancelled")),
                    ground_truth=bool(raw.get("ground_truth")),
                    values=values,
                    problems=tuple(found),
                )
            )
        return ExportedTask(
            task_id, data, entry.get("created_at"), tuple(annotations), tuple(problems), entry
        )

    def result(self, items: Any) -> tuple[dict[str, list[str]], list[str]]:
        values: dict[str, list[str]] = defaultdict(list)
        problems: list[str] = []
        if not isinstance(items, list):
            return {}, ["'result' is not a list"]
        for item in items:
            if not isinstance(item, dict):
                problems.append("a result item is not a JSON object")
                continue
            name = item.get("from_name")
            control = self.controls.get(str(name))
            if control is None:
                problems.append(f"unknown control '{name}'")
                continue
            if item.get("type") != control.type:
                problems.append(
                    f"control '{name}' should give a {control.type} result, "
                    f"not {item.get('type')!r}"
                )
                continue
            key = "text" if control.type == "textarea" else "choices"
            value = item.get("value")
            found = value.get(key) if isinstance(value, dict) else None
            if isinstance(found, str) and control.type == "textarea":
                found = [found]
            if not isinstance(found, list) or not all(isinstance(v, str) for v in found):
                problems.append(f"control '{name}': value.{key} should be a list of strings")
                continue
            values[control.name] += self.choices(control, found, problems)
        return dict(values), problems

    def choices(self, control: Control, found: list[str], problems: list[str]) -> list[str]:
        if control.type != "choices" or control.options_field:
            return found  # texts, or options that depend on the task (checked later)
        out = []
        for value in found:
            exported = control.exported(value)
            if exported is None:
                problems.append(f"'{value}' is not a choice of '{control.name}'")
            else:
                out.append(exported)
        return out

    def minimal_task(self, task_id: str, rows: list[tuple[int, dict[str, Any]]]) -> ExportedTask:
        annotations = []
        data: dict[str, Any] = {}
        for number, row in rows:
            values: dict[str, list[str]] = {}
            problems: list[str] = []
            for key, value in row.items():
                control = self.controls.get(key)
                if control is None:
                    if key not in MIN_ANNOTATION_KEYS:
                        data.setdefault(key, value)
                    continue
                found = _minimal_value(control, value)
                if found is None:
                    problems.append(
                        f"row {number}: control '{key}' has a value that is not a "
                        f"{control.type} result: {value!r}"
                    )
                    continue
                values[control.name] = self.choices(control, found, problems)
            annotations.append(
                Annotation(
                    id=str(row.get("annotation_id", f"row {number}")),
                    annotator=self.annotator(row.get("annotator")),
                    created_at=row.get("created_at"),
                    updated_at=row.get("updated_at"),
                    lead_time=_number(row.get("lead_time")),
                    values=values,
                    problems=tuple(problems),
                )
            )
        return ExportedTask(task_id, data, None, tuple(annotations), raw=[row for _, row in rows])


def _minimal_value(control: Control, value: Any) -> list[str] | None:
    """A JSON_MIN value as a list of strings: a bare string is one value; several values come as
    ``{"text": [...]}`` or ``{"choices": [...]}``."""
    key = "text" if control.type == "textarea" else "choices"
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and set(value) == {key}:
        value = value[key]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# -- what one annotation says ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one annotation decided, and ``key``: what annotators must share to agree."""

    key: tuple[str, ...]
    text: str | None = None  # refine: the instruction; prefer: a rewrite
    quality: str | None = None  # refine
    pick: int | None = None  # prefer: the chosen candidate (or the one a rewrite corrects)
    codes: tuple[str, ...] = ()  # evaluate: defect codes at the graded severity
    comment: str | None = None  # evaluate


class Rejected(ValueError):
    """An annotation that cannot be read as an answer; the message says why."""


#: Characters that mean nothing in any script: zero-width space, word joiner, BOM. Removed from
#: human text (zero-width joiners stay: some scripts and emoji need them).
_MEANINGLESS = dict.fromkeys(map(ord, "\u200b\u2060\ufeff"))
#: Characters that draw nothing although Unicode files them as letters or symbols (Hangul fillers,
#: the blank Braille pattern).
_BLANK_SYMBOLS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Categories that draw nothing on their own: format characters (joiners, marks), controls, and
#: combining marks with no base.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Mn", "Me", "Zs", "Zl", "Zp"})


def _normalized(text: str) -> str:
    """Human text as it is stored: NFC (one encoding per accented letter), meaningless invisible
    characters removed, runs of whitespace collapsed."""
    text = unicodedata.normalize("NFC", text).translate(_MEANINGLESS)
    return re.sub(r"\s+", " ", text).strip()


def _carries_nothing(text: str) -> bool:
    """Empty, or only whitespace and characters that draw nothing."""
    return all(
        char.isspace()
        or char in _BLANK_SYMBOLS
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
        for char in text
    )


def _single(annotation: Annotation, name: str) -> str | None:
    values = annotation.values.get(name, [])
    if len(values) > 1:
        raise Rejected(f"'{name}' should hold one choice, not {values}")
    return values[0] if values else None


def _text(annotation: Annotation, name: str, separator: str = " ") -> str:
    """The control's text as stored, or ``""`` when it carries nothing visible."""
    text = _normalized(separator.join(annotation.values.get(name, [])))
    return "" if _carries_nothing(text) else text


def _blank(annotation: Annotation, name: str) -> str:
    """Why a text control that was filled in still counts as empty, for a rejection message."""
    raw = "".join(annotation.values.get(name, []))
    if not raw:
        return ""
    shown = sorted({f"U+{ord(c):04X}" for c in raw if c not in " \t\r\n"})
    what = f"whitespace and invisible characters ({', '.join(shown)})" if shown else "whitespace"
    return f"; '{name}' holds only {what}"


def option_values(count: int) -> list[str]:
    """The option value of each candidate of a prefer task: A, B, ... Z, then C27, C28, ..."""
    return [chr(ord("A") + i) if i < 26 else f"C{i + 1}" for i in range(count)]


def decide(kind: TaskKind, annotation: Annotation, shown: Sequence[str]) -> Decision:
    """Read one submitted annotation. ``shown`` is what the task showed: the instruction (refine,
    evaluate) or the candidates (prefer). Raises :class:`Rejected` when it is not an answer."""
    if annotation.problems:
        raise Rejected("; ".join(annotation.problems))
    if kind == "refine":
        return _refine(annotation, shown[0])
    if kind == "prefer":
        return _prefer(annotation, len(shown))
    return _evaluate(annotation)


def _refine(annotation: Annotation, original: str) -> Decision:
    quality = _single(annotation, "quality")
    text = _text(annotation, "refined")
    if quality == "unusable":
        return Decision(key=("unusable",), quality=quality)
    if not text:
        if quality != "accurate":
            raise Rejected(
                "no corrected instruction"
                + (f" although quality is '{quality}'" if quality else " and no quality chosen")
                + _blank(annotation, "refined")
            )
        text = _normalized(original)
    return Decision(key=("text", text), text=text, quality=quality)


def _prefer(annotation: Annotation, candidates: int) -> Decision:
    options = option_values(candidates)
    best = _single(annotation, "best")
    allowed = [*options, NONE_OPTION] + ([TIE_OPTION] if candidates > 1 else [])
    if best is not None and best not in allowed:
        raise Rejected(f"'{best}' is not an option of this task ({', '.join(allowed)})")
    pick = options.index(best) if best in options else None
    rewrite = _text(annotation, "rewrite")
    if rewrite:
        return Decision(key=("rewrite", rewrite), text=rewrite, pick=pick)
    if best == TIE_OPTION:
        return Decision(key=("tie",))
    if pick is not None:
        return Decision(key=("pick", str(pick)), pick=pick)
    blank = _blank(annotation, "rewrite")
    if best == NONE_OPTION:
        raise Rejected("'none' was chosen but no better instruction was written" + blank)
    raise Rejected("no candidate chosen and no instruction written" + blank)


def _evaluate(annotation: Annotation) -> Decision:
    verdict = _single(annotation, "verdict")
    comment = _text(annotation, "comment", "\n") or None
    if verdict == "correct":
        return Decision(key=("correct",), comment=comment)
    if verdict != "defective":
        raise Rejected("no verdict (correct or defective) chosen")
    # The checklist is hierarchical: the most severe level ticked is the grade; lists below it
    # were hidden from the annotator, so anything left ticked there does not count.
    for level in ("p0", "p1", "p2"):
        ticked = annotation.values.get(level, [])
        if ticked:
            try:
                codes = tuple(dict.fromkeys(normalize_code(c) for c in ticked))
            except DefectCodeError as exc:
                raise Rejected(str(exc)) from exc
            wrong = [c for c in codes if not c.startswith(level.upper())]
            if wrong:
                raise Rejected(f"'{level}' holds codes of another severity: {', '.join(wrong)}")
            return Decision(key=(grade(codes),), codes=codes, comment=comment)
    raise Rejected("'defective' was chosen but no defect was ticked")


# -- several annotations, one answer ----------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The outcome of a task: the annotations whose decisions count (empty for a skipped task)."""

    chosen: tuple[tuple[Annotation, Decision], ...]


def resolve(
    kind: TaskKind,
    task: ExportedTask,
    shown: Sequence[str],
    rule: Resolution,
    min_annotations: int,
) -> Resolved | None:
    """``None`` while the task is open; otherwise what counts. Raises :class:`Rejected` for a
    task that is finished but cannot be read or resolved.

    A task is finished once it holds ``min_annotations`` annotations, submitted or skipped. If all
    are skipped it produces nothing. Annotations marked ground truth win over the rule. Only the
    annotations the outcome rests on are read, so a broken annotation that a later one (under
    ``latest``) or a ground truth superseded no longer fails the task.
    """
    if task.problems:
        raise Rejected("; ".join(task.problems))
    if len(task.annotations) < min_annotations:
        return None
    submitted = sorted((a for a in task.annotations if not a.cancelled), key=_order)
    truth = [a for a in submitted if a.ground_truth]
    used = truth[-1:] if truth else submitted[-1:] if rule == "latest" else submitted
    decided: list[tuple[Annotation, Decision]] = []
    problems: list[str] = []
    for annotation in used:
        try:
            decided.append((annotation, decide(kind, annotation, shown)))
        except Rejected as exc:
            problems.append(f"annotation {annotation.id} by {annotation.annotator}: {exc}")
    if problems:
        raise Rejected("; ".join(problems))
    if truth or not decided or rule in ("all", "latest"):
        return Resolved(tuple(decided))
    groups: dict[tuple[str, ...], list[tuple[Annotation, Decision]]] = defaultdict(list)
    for ad in decided:
        groups[ad[1].key].append(ad)
    largest = max(groups.values(), key=lambda g: (len(g), g[-1][0].when))
    if rule == "agree" and len(groups) > 1:
        raise Rejected(f"annotators disagree: {_tally(groups)}")
    if rule == "majority" and 2 * len(largest) <= len(decided):
        raise Rejected(f"no majority among {len(decided)} annotations: {_tally(groups)}")
    return Resolved((largest[-1],))


def _order(annotation: Annotation) -> tuple[datetime, str]:
    return annotation.when, annotation.id


def _tally(groups: Mapping[tuple[str, ...], Sequence[tuple[Annotation, Decision]]]) -> str:
    return "; ".join(
        f"{' '.join(key)!r} by {', '.join(a.annotator for a, _ in members)}"
        for key, members in groups.items()
    )


__all__ = [
    "NONE_OPTION",
    "TIE_OPTION",
    "Annotation",
    "BadRow",
    "Decision",
    "ExportedTask",
    "Rejected",
    "Resolution",
    "Resolved",
    "decide",
    "option_values",
    "read_export",
    "resolve",
]
