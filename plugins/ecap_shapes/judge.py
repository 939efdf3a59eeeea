"""The ``shapes-rules`` judge: the EditCaption rubric applied by rules to ShapesEdit references.

No model is asked anything. The instruction is read into assertions (:mod:`.grammar`), each
assertion is checked against the reference's machine-readable changes, and the facts an LLM judge
would be asked for (which primary change is hit, hallucinations, major and minor errors, vague
terms, missing attributes) are handed to the same rule functions the LLM judges use
(:mod:`ecap.rubric`: coverage lookup, accuracy caps, clarity ceilings, weights), so a rules
verdict and an LLM verdict on the same facts give the same numbers.

Checking an assertion against a change:

- **object**: what it names must be true of the changed object (else *wrong object*); if it fits
  several objects of the scene ("the circle" among two circles) or names none, the executor cannot
  tell which one (*missing attribute*);
- **direction**: a reversed direction is a miss and a major error, tagged *orientation error*
  (left/right, up/down, clockwise/counterclockwise) or *viewpoint error* (zoom in/out, pan); no
  direction at all is a vague mention (partial) and a *missing attribute*;
- **target** (new colour, texture, replacement, count): wrong is a major error (*wrong
  attribute*), absent is a *missing attribute*;
- **amount** (distance, factor, degrees, share): outside ``amount_tolerance`` it is a minor error
  (*wrong amount*); absent, a detail missing for Clarity;
- a camera change described as another camera change, or as moving or resizing "everything", is a
  *viewpoint error*.

An assertion no change explains is a *hallucination* when it invents an operation (an addition,
removal, camera or global change), and an error about an unchanged element (minor) when it
edits an object that is there but did not change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from ecap.interfaces import Judge, PluginConfig
from ecap.records import Item, Reference, SampleError, Verdict
from ecap.rubric import (
    PAPER_WEIGHTS,
    RUBRIC_ID,
    AccuracyAnswer,
    ChangeCheck,
    ClarityAnswer,
    CompletenessAnswer,
    Scoring,
    accuracy_score,
    clarity_score,
    completeness_score,
    forbidden_terms,
    weighted,
)

from .grammar import SHAPE, Assertion, Mention, parse
from .language import name
from .operations import OPPOSITE, Change
from .source import CHANGES, SCENE, SECONDARY

JUDGE_NAME = "shapes-rules"
ORIENTATION = "orientation_error"
VIEWPOINT = "viewpoint_error"
MISSING_ATTRIBUTE = "missing_attribute"
WRONG_OBJECT = "wrong_object"
WRONG_ATTRIBUTE = "wrong_attribute"
WRONG_DIRECTION = "wrong_direction"
WRONG_AMOUNT = "wrong_amount"
HALLUCINATION = "hallucination"
UNCHANGED_ELEMENT = "unchanged_element"
OMISSION = "omission"
VAGUE_TERMS = "vague_terms"
#: Every tag a verdict's ``labels`` may hold, with what it means.
FAILURE_MODES: dict[str, str] = {
    ORIENTATION: "a direction flipped: left/right, up/down, clockwise/counterclockwise",
    VIEWPOINT: "a camera change misdescribed: zoom in/out swapped, a pan's direction wrong, or a "
    "zoom or pan described as another camera change or as moving or resizing everything",
    MISSING_ATTRIBUTE: "an object or target named without what identifies it (colour or shape "
    "where several objects fit, the new colour, the direction, the count)",
    WRONG_OBJECT: "the edit is ascribed to an object that did not undergo it",
    WRONG_ATTRIBUTE: "a wrong target: colour, texture, replacement or count",
    WRONG_DIRECTION: "a wrong direction that is not a flip (up for left; darker for brighter)",
    WRONG_AMOUNT: "a distance, factor, angle or share outside the tolerance",
    HALLUCINATION: "an operation that did not happen (an invented addition, removal, camera or "
    "global change)",
    UNCHANGED_ELEMENT: "an edit to an object that did not change",
    OMISSION: "a primary change not mentioned at all",
    VAGUE_TERMS: "forbidden vague terms (the Clarity ceilings)",
}

ORIENTATION_OPERATIONS = ("move", "rotate")
CAMERA_OPERATIONS = ("zoom", "pan")
#: Operations an unexplained assertion invents rather than misapplies.
INVENTING_OPERATIONS = frozenset(
    ("add", "remove", "replace", "count", "swap", "zoom", "pan", "background", "brightness", "tone")
)
Status = Literal["hit", "partial", "miss"]
RANK: dict[str, int] = {"miss": 0, "partial": 1, "hit": 2}
VAGUE_VERBS = ("adjust", "process", "optimize", "optimise", "modify")
_DEMONSTRATIVE = re.compile(
    rf"\b(this|that)\s+(?:(?:{SHAPE})s?|one|object|shape|thing|colou?r|part|area|side|pattern)\b"
    r"|\b(this|that)\s*(?:[.,;!?]|$)"
)


class ShapesRulesConfig(PluginConfig):
    amount_tolerance: float = Field(
        0.34,
        ge=0,
        description="relative error allowed on a stated amount (distance, factor, degrees, "
        "share) before it counts as a minor error",
    )
    scoring: Scoring = Field(
        default_factory=Scoring,
        description="how the rubric's rules read the paper (the LLM judges' setting)",
    )


@dataclass
class Finding:
    """One assertion checked against one change."""

    status: Status = "hit"
    major: list[str] = field(default_factory=list)
    minor: list[str] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)  # key attributes (Clarity 3)
    details: list[str] = field(default_factory=list)  # secondary details (Clarity 4)
    part: str | None = None  # a replace told as a removal ("old") and an addition ("new")

    def worse(self, status: Status) -> None:
        if RANK[status] < RANK[self.status]:
            self.status = status

    def rank(self) -> tuple[int, int, int]:
        return RANK[self.status], -len(self.major), -len(self.minor)


@dataclass
class Checked:
    """The whole instruction against the whole reference."""

    assertions: list[Assertion]
    primary: list[Status]
    secondary_covered: bool
    major: list[str]
    minor: list[str]
    hallucinations: list[str]
    labels: set[str]
    missing: list[str]
    details: list[str]


class Checker:
    """Checks assertions against one reference's changes."""

    def __init__(self, reference: Reference, tolerance: float) -> None:
        meta = reference.meta
        self.kinds: list[dict[str, str]] = [dict(o) for o in meta[SCENE]["objects"]]
        self.primary = [Change.from_descriptor(c) for c in meta[CHANGES]]
        self.secondary = [Change.from_descriptor(c) for c in meta.get(SECONDARY, [])]
        self.tolerance = tolerance

    # -- one assertion against one change ------------------------------------------------------

    def assess(self, a: Assertion, c: Change) -> Finding | None:
        """``None`` when the assertion is about another kind of edit altogether."""
        op = c.operation
        if op in CAMERA_OPERATIONS:
            return self._camera(a, c)
        if a.operation == op:
            return getattr(self, f"_{op}")(a, c)
        if op == "count" and a.operation in ("add", "remove"):
            implied = "more" if a.operation == "add" else "fewer"
            return self._count(a, c, implied)
        if op == "replace" and a.operation in ("remove", "add"):
            return self._replace_in_parts(a, c)
        return None

    def _object(self, f: Finding, mention: Mention | None, kind: dict[str, str]) -> bool:
        """Whether the mention names ``kind``. An object not named at all is a miss with a
        missing attribute (nothing false was said); a name several objects fit is a missing
        attribute whichever object it names."""
        if mention is None or not (mention.named or mention.scene):
            f.worse("miss")
            f.missing.append(f"which object: the {name(kind)}")
            f.labels.add(MISSING_ATTRIBUTE)
            return True
        fitting = {(k["shape"], k["colour"]) for k in self.kinds if mention.fits(k)}
        if len(fitting) > 1:
            f.missing.append(f"which {mention.words()}: {len(fitting)} objects fit")
            f.labels.add(MISSING_ATTRIBUTE)
        if mention.scene or not mention.fits(kind):
            f.worse("miss")
            f.major.append(f"names the {mention.words()}, but the edit is to the {name(kind)}")
            f.labels.add(WRONG_OBJECT)
            return False
        return True

    def _direction(
        self, f: Finding, said: str | None, c: Change, what: str, facts: bool = True
    ) -> None:
        """Checks the direction; with ``facts`` off (the object is already wrong) only whether
        one was given at all, which Clarity needs either way."""
        true = c.direction
        if true is None:
            return
        if said is None:
            f.worse("partial")
            f.missing.append(f"the direction of {what} ({true})")
            f.labels.add(MISSING_ATTRIBUTE)
        elif facts and said != true:
            flipped = OPPOSITE.get(true) == said
            if c.operation in CAMERA_OPERATIONS:
                tag = VIEWPOINT
            elif flipped and c.operation in ORIENTATION_OPERATIONS:
                tag = ORIENTATION
            else:
                tag = WRONG_DIRECTION
            if flipped:
                f.worse("miss")  # a reversed direction is a miss, not a hit
            f.major.append(f"{what}: says {said}, but it is {true}")
            f.labels.add(tag)

    def _amount(self, f: Finding, said: float | None, true: float | None, what: str) -> None:
        if true is None:
            return
        if said is None:
            f.details.append(f"how much ({what}: about {true:g})")
        elif abs(said - true) > self.tolerance * abs(true):
            f.minor.append(f"{what}: says {said:g}, but it is about {true:g}")
            f.labels.add(WRONG_AMOUNT)

    def _target(self, f: Finding, said: str | None, true: str, what: str) -> None:
        if said is None:
            f.missing.append(f"{what} ({true})")
            f.labels.add(MISSING_ATTRIBUTE)
        elif said != true:
            f.major.append(f"{what}: says {said}, but it is {true}")
            f.labels.add(WRONG_ATTRIBUTE)

    def _first(self, a: Assertion) -> Mention | None:
        return a.objects[0] if a.objects else None

    def _add(self, a: Assertion, c: Change) -> Finding:
        f, kind, said = Finding(), c.subject or {}, self._first(a)
        if said is None or said.shape is None:
            f.worse("partial")
            f.missing.append(f"what to add (a {name(kind)})")
            f.labels.add(MISSING_ATTRIBUTE)
        elif said.shape != kind["shape"]:
            f.worse("miss")
            f.major.append(f"adds a {said.words()}, but a {name(kind)} appears")
            f.labels.add(WRONG_OBJECT)
            return f
        if said is not None and said.shape is not None:
            self._target(f, said.colour, kind["colour"], "the new object's colour")
        return f

    def _remove(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        self._object(f, self._first(a), c.subject or {})
        return f

    def _replace(self, a: Assertion, c: Change) -> Finding:
        f, new = Finding(), c.details["new_object"]
        if not self._object(f, self._first(a), c.subject or {}):
            return f
        replacement = a.objects[1] if len(a.objects) > 1 else None
        if replacement is None or replacement.shape is None:
            f.missing.append(f"the replacement ({name(new)})")
            f.labels.add(MISSING_ATTRIBUTE)
        elif not replacement.fits(new):
            f.major.append(f"replaces it with a {replacement.words()}, but it is a {name(new)}")
            f.labels.add(WRONG_ATTRIBUTE)
        return f

    def _replace_in_parts(self, a: Assertion, c: Change) -> Finding | None:
        """ "Remove the red circle; add a blue star" for a replacement: each half a hit, both
        together a hit (the paper would rather see "replace", a P2 matter, not a miss)."""
        said = self._first(a)
        if a.operation == "remove":
            kind, part = c.subject or {}, "old"
        else:
            kind, part = c.details["new_object"], "new"
        if said is None or not said.named or not said.fits(kind):
            return None
        return Finding(status="partial", part=part)

    def _background(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        self._target(f, a.colour, c.details["to"], "the new background colour")
        return f

    def _recolor(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        if self._object(f, self._first(a), c.subject or {}):
            self._target(f, a.colour, c.details["to"], "the new colour")
        return f

    def _texture(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        if self._object(f, self._first(a), c.subject or {}):
            self._target(f, a.texture, c.details["to"], "the new pattern")
        return f

    def _brightness(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        self._direction(f, a.direction, c, "the brightness")
        self._amount(f, a.amount, c.amount, "the brightness change")
        return f

    def _tone(self, a: Assertion, c: Change) -> Finding:
        f = Finding()
        self._direction(f, a.direction, c, "the colour tone")
        return f

    def _directed(self, a: Assertion, c: Change, what: str, unit: str) -> Finding:
        """Move, resize, rotate: the object, then its direction and amount."""
        f = Finding()
        right = self._object(f, self._first(a), c.subject or {})
        self._direction(f, a.direction, c, f"{what} the {name(c.subject or {})}", facts=right)
        if right:
            self._amount(f, a.amount, c.amount, unit)
        return f

    def _move(self, a: Assertion, c: Change) -> Finding:
        return self._directed(a, c, "the move of", "the distance (share of the image)")

    def _resize(self, a: Assertion, c: Change) -> Finding:
        return self._directed(a, c, "the size of", "the size factor")

    def _rotate(self, a: Assertion, c: Change) -> Finding:
        return self._directed(a, c, "the rotation of", "the angle in degrees")

    def _swap(self, a: Assertion, c: Change) -> Finding:
        f, pair = Finding(), [c.subject or {}, c.details["other"]]
        named = [m for m in a.objects if m.named][:2]
        right = [k for k in pair if any(m.fits(k) for m in named)]
        if len(right) == 2:
            for m in named:
                self._object(f, m, next(k for k in pair if m.fits(k)))
        else:
            f.worse("partial" if right else "miss")
            f.major.append(
                f"swaps {' and '.join(m.words() for m in named) or 'unnamed objects'}, "
                f"but the {name(pair[0])} and the {name(pair[1])} swap"
            )
            f.labels.add(WRONG_OBJECT)
        return f

    def _count(self, a: Assertion, c: Change, implied: str | None = None) -> Finding:
        f = Finding()
        if not self._object(f, self._first(a), c.subject or {}):
            return f
        self._direction(f, a.direction or implied, c, f"the number of {name(c.subject or {})}s")
        before, after, by = a.counts
        if implied is not None and by is None and after is None:
            by = 1  # "add a red circle": one more
        true_from, true_to = c.details["from"], c.details["to"]
        if after is not None and after != true_to:
            f.major.append(f"says there end up {after}, but there are {true_to}")
            f.labels.add(WRONG_ATTRIBUTE)
        if by is not None and by != abs(true_to - true_from):
            f.major.append(
                f"changes the count by {by}, but it changes by {abs(true_to - true_from)}"
            )
            f.labels.add(WRONG_ATTRIBUTE)
        if before is not None and before != true_from:
            f.minor.append(f"says there were {before}, but there were {true_from}")
        if after is None and by is None:
            f.missing.append(f"how many ({true_from} to {true_to})")
            f.labels.add(MISSING_ATTRIBUTE)
        return f

    def _camera(self, a: Assertion, c: Change) -> Finding | None:
        what = "the zoom" if c.operation == "zoom" else "the camera pan"
        if a.operation == c.operation:
            f = Finding()
            self._direction(f, a.direction, c, what)
            unit = "the zoom factor" if c.operation == "zoom" else "the pan (share of the image)"
            self._amount(f, a.amount, c.amount, unit)
            return f
        everything = any(m.scene for m in a.objects)
        misdescribed = a.operation in CAMERA_OPERATIONS or (
            everything and a.operation in ("move", "resize")
        )
        if not misdescribed:
            return None
        told = (
            "a camera " + a.operation
            if a.operation in CAMERA_OPERATIONS
            else (f"{'moving' if a.operation == 'move' else 'resizing'} everything")
        )
        f = Finding(status="partial" if a.operation not in CAMERA_OPERATIONS else "miss")
        f.major.append(f"describes {what} ({c.direction}) as {told}")
        f.labels.add(VIEWPOINT)
        return f

    # -- the whole instruction -----------------------------------------------------------------

    def check(self, instruction: str) -> Checked:
        assertions = parse(instruction)
        changes = [*self.primary, *self.secondary]
        assigned: dict[int, list[tuple[Assertion, Finding]]] = {i: [] for i in range(len(changes))}
        unexplained: list[Assertion] = []
        for a in assertions:
            options = [
                (i, f) for i, c in enumerate(changes) if (f := self.assess(a, c)) is not None
            ]
            if not options:
                unexplained.append(a)
                continue
            index, finding = max(options, key=lambda o: o[1].rank())
            assigned[index].append((a, finding))
        statuses: list[Status] = []
        used: list[Finding] = []
        omitted = False
        for index in range(len(changes)):
            omitted |= index < len(self.primary) and not assigned[index]
            status, findings = self._settle(assigned[index], unexplained)
            statuses.append(status)
            used.extend(findings)
        hallucinations, minor = [], [m for f in used for m in f.minor]
        labels = {label for f in used for label in f.labels}
        for a in unexplained:
            invented = a.operation in INVENTING_OPERATIONS or not any(
                m.named and any(m.fits(k) for k in self.kinds) for m in a.objects
            )
            if invented:
                hallucinations.append(f"'{a.clause}' did not happen")
                labels.add(HALLUCINATION)
            else:
                minor.append(f"'{a.clause}': that object did not change")
                labels.add(UNCHANGED_ELEMENT)
        if omitted:
            labels.add(OMISSION)
        primary = statuses[: len(self.primary)]
        return Checked(
            assertions=assertions,
            primary=primary,
            secondary_covered=any(s != "miss" for s in statuses[len(self.primary) :]),
            major=[m for f in used for m in f.major],
            minor=minor,
            hallucinations=hallucinations,
            labels=labels,
            missing=[m for f in used for m in f.missing],
            details=[d for f in used for d in f.details],
        )

    def _settle(
        self, found: list[tuple[Assertion, Finding]], unexplained: list[Assertion]
    ) -> tuple[Status, list[Finding]]:
        """A change's status from the assertions that best explain it, and the findings that
        count. Once one assertion hits the change, another one ascribing it to a different object
        is an edit nobody made: it joins the unexplained assertions."""
        if not found:
            return "miss", []
        parts = {f.part for _, f in found if f.part}
        if parts == {"old", "new"}:
            return "hit", [f for _, f in found if not f.part]
        best = max(f.rank() for _, f in found)
        keep: list[Finding] = []
        for a, f in found:
            if best[0] == RANK["hit"] and f.status == "miss" and WRONG_OBJECT in f.labels:
                unexplained.append(a)
            else:
                keep.append(f)
        status = max((f.status for f in keep), key=RANK.__getitem__)
        return status, keep


def concrete(assertion: Assertion) -> bool:
    """Whether an assertion states a target (so a vague verb in it is not vague)."""
    return bool(
        assertion.direction
        or assertion.colour
        or assertion.texture
        or assertion.amount is not None
        or any(assertion.counts)
        or (assertion.operation in ("add", "remove", "swap", "replace") and assertion.objects)
    )


def listed_vague_terms(instruction: str, assertions: Sequence[Assertion]) -> list[str]:
    """The verbs and references the rules find vague (what an LLM judge would list): a pronoun
    or demonstrative standing for an object, "the original image", and a vague verb in a clause
    that states no target."""
    text = instruction.lower()
    found = [m[1] or m[2] for m in _DEMONSTRATIVE.finditer(text)]
    if re.search(r"\bit\b", text):
        found.append("it")
    if re.search(r"\boriginal (?:image|picture|photo|one)\b", text):
        found.append("original image")
    clear = " ".join(a.clause for a in assertions if concrete(a))
    for verb in VAGUE_VERBS:
        if re.search(rf"\b{verb}", text) and not re.search(rf"\b{verb}", clear):
            found.append(verb)
    return found


class ShapesRulesJudge(Judge):
    """Scores instructions against ShapesEdit references by rules, with failure-mode tags."""

    Config = ShapesRulesConfig
    config: ShapesRulesConfig
    revision = "1"

    def judge(self, batch: Sequence[Item]) -> list[Verdict | SampleError]:
        return [self._one(item) for item in batch]

    def _one(self, item: Item) -> Verdict | SampleError:
        if item.instruction is None or item.reference is None:
            missing = "an instruction" if item.instruction is None else "a reference"
            return SampleError(error_type="MissingInput", message=f"no {missing} to judge")
        if CHANGES not in item.reference.meta or SCENE not in item.reference.meta:
            return SampleError(
                error_type="NotAShapesReference",
                message="the reference has no ShapesEdit change data (meta 'changes' and "
                "'scene'); shapes-rules judges only pairs made by the shapes source",
            )
        return score(item, self.config)


def score(item: Item, config: ShapesRulesConfig) -> Verdict:
    """The verdict for an item that has an instruction and a ShapesEdit reference."""
    assert item.instruction is not None and item.reference is not None
    reference, text = item.reference, item.instruction.text
    checked = Checker(reference, config.amount_tolerance).check(text)
    checks = [ChangeCheck(change=i, status=s) for i, s in enumerate(checked.primary, start=1)]
    hits = sum(s == "hit" for s in checked.primary)
    nothing_right = bool(checked.assertions) and hits == 0 and WRONG_OBJECT in checked.labels
    accuracy = AccuracyAnswer(
        assertions=[a.clause for a in checked.assertions],
        primary_changes=checks,
        hallucination=bool(checked.hallucinations),
        major_errors=len(checked.major),
        minor_errors=len(checked.minor),
        score=1.0 if nothing_right or not checked.assertions else 5.0,
        reasoning=_accuracy_reason(checked, hits),
    )
    completeness = CompletenessAnswer(
        primary_changes=checks,
        secondary_covered=checked.secondary_covered,
        score=5.0,  # the lookup table decides; the answer's own score is not used
        reasoning=_completeness_reason(checked),
    )
    listed = listed_vague_terms(text, checked.assertions)
    vague = forbidden_terms(listed, text, config.scoring)
    base = (
        1.0
        if not checked.assertions
        else 3.0
        if checked.missing
        else 4.0
        if checked.details
        else 5.0
    )
    clarity = ClarityAnswer(
        forbidden_terms=listed,
        missing_attributes=[*checked.missing, *checked.details],
        score=base,
        reasoning=_clarity_reason(checked, vague),
    )
    labels = set(checked.labels)
    if vague:
        labels.add(VAGUE_TERMS)
    axes = {
        "accuracy": accuracy_score(accuracy, reference, text, config.scoring),
        "completeness": completeness_score(completeness, reference, text, config.scoring),
        "clarity": clarity_score(clarity, reference, text, config.scoring),
    }
    return Verdict(
        pair_id=item.pair.id,
        instruction_id=item.instruction.id,
        reference_id=reference.id,
        judge=JUDGE_NAME,
        kind="model",
        axes=axes,
        reasons={
            "accuracy": accuracy.reasoning,
            "completeness": completeness.reasoning,
            "clarity": clarity.reasoning,
        },
        labels=sorted(labels),
        weighted=weighted(axes),
        meta={
            "rubric": RUBRIC_ID,
            "weights": PAPER_WEIGHTS,
            "answers": {
                "accuracy": accuracy.model_dump(),
                "completeness": completeness.model_dump(),
                "clarity": clarity.model_dump(),
            },
            "assertions": [a.operation for a in checked.assertions],
        },
    )


def _accuracy_reason(checked: Checked, hits: int) -> str:
    total = len(checked.primary)
    said = f"{hits} of {total} primary changes stated correctly."
    problems = [
        *(f"Invented: {h}." for h in checked.hallucinations),
        *(f"Major error: {m}." for m in checked.major),
        *(f"Minor error: {m}." for m in checked.minor),
    ]
    if not checked.assertions:
        return "The instruction asks for no edit the rules can recognise."
    return " ".join([said, *problems]) if problems else f"{said} Every statement is true."


def _completeness_reason(checked: Checked) -> str:
    total = len(checked.primary)
    hit = sum(s != "miss" for s in checked.primary)
    share = 100 * hit / total if total else 100
    parts = ", ".join(f"({i}) {s}" for i, s in enumerate(checked.primary, start=1))
    secondary = " A secondary change is also mentioned." if checked.secondary_covered else ""
    return f"{total} primary changes, {hit} mentioned (R = {share:.0f}%): {parts}.{secondary}"


def _clarity_reason(checked: Checked, vague: list[str]) -> str:
    notes = []
    if vague:
        notes.append(f"Vague terms: {', '.join(vague)}.")
    if checked.missing:
        notes.append(f"Missing: {'; '.join(checked.missing)}.")
    if checked.details:
        notes.append(f"Details left out: {'; '.join(checked.details)}.")
    if not checked.assertions:
        notes.append("No executable edit.")
    return " ".join(notes) or "Every object, target and amount is stated unambiguously."
