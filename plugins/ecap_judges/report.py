"""The judges' sections of ``ecap report``: the EditCaption paper's judge tables.

- **Scores** (the paper's Table 2): judge means of S, Accuracy, Completeness and Clarity per model
  (rows) and benchmark (column groups), each with its bootstrap interval and n.
- **Ablation** (Table 4): several run or step selections side by side, per model and benchmark.
- **Agreement**: Spearman's rank correlation between the judge's S and the human usability score
  (correct 3, P2 2, P1 1, P0 0) on the instructions that have both.

(Table 3, the human grades, is ecap's own section: :mod:`ecap.report.human`.)

Rules the numbers follow:

- The judge verdicts in a report must come from one judge: mixing judges in one mean would compare
  nothing, so several judges without ``--judge`` is an error that lists them.
- Verdicts whose S follow different formulas (another rubric, or the same rubric with other
  weights) are never averaged together: with more than one, every table gets a Rubric column and
  each rubric its own rows, and a note says so.
- One verdict per instruction: when the same instruction was judged more than once (a re-run after
  a config change), the latest verdict (highest ULID) counts, and the report says how many were
  superseded.
- Ablation rows: with ``--step`` given, one selection per step (inside the ``--run`` runs, if
  any); otherwise one per ``--run``. ``LABEL=ID`` names a row. Two or more selections are needed
  for the ablation table; the scores table covers all selections together.

Everything is read through :mod:`ecap.report`'s query API, never the store's tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ecap.defects import usability
from ecap.errors import EcapError
from ecap.report import (
    Chart,
    Column,
    ReportContext,
    ReportSection,
    Row,
    Rubric,
    Table,
    VerdictFact,
    split_label,
)
from ecap.report.human import by_model_order, human_grades
from ecap.report.stats import spearman
from ecap.report.table import ordered

#: Judge metrics, in the paper's column order: S is the judge's weighted score.
METRICS: tuple[Column, ...] = (
    Column("S", "S", digits=3),
    Column("accuracy", "Acc"),
    Column("completeness", "Comp"),
    Column("clarity", "Clar"),
)
RUBRIC = Column("rubric", "Rubric")
SCORE_CHART_MAX = 5.3


@dataclass(frozen=True)
class Selection:
    """A labelled set of judge verdicts: those written by the given runs (id prefixes) and steps.
    An empty ``runs`` or ``steps`` means any."""

    label: str
    runs: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    def matches(self, fact: VerdictFact) -> bool:
        run_id = fact.run_id
        if self.runs and not (run_id and any(run_id.startswith(r) for r in self.runs)):
            return False
        return not self.steps or fact.step_id in self.steps


def selections(runs: Sequence[str], steps: Sequence[str]) -> list[Selection]:
    """The ablation rows. With steps given, one per step (within the given runs, if any);
    otherwise one per run."""
    run_ids = tuple(split_label(r)[1] for r in runs)
    if steps:
        return [Selection(label, run_ids, (ref,)) for label, ref in map(split_label, steps)]
    return [Selection(label, (ref,)) for label, ref in map(split_label, runs)]


def latest_per_instruction(facts: Iterable[VerdictFact]) -> tuple[list[VerdictFact], int]:
    """The latest verdict (highest id) for each instruction, and how many older ones were left."""
    latest: dict[str, VerdictFact] = {}
    total = 0
    for fact in facts:
        if fact.instruction_id is None:
            continue
        total += 1
        kept = latest.get(fact.instruction_id)
        if kept is None or fact.verdict_id > kept.verdict_id:
            latest[fact.instruction_id] = fact
    return sorted(latest.values(), key=lambda f: f.verdict_id), total - len(latest)


@dataclass(frozen=True)
class Judged:
    """The selected judge verdicts (``every``), the latest one per instruction (``latest``), and
    whether they follow several rubrics (then every table is split by rubric)."""

    every: list[VerdictFact]
    latest: list[VerdictFact]
    several_rubrics: bool


def judged(context: ReportContext) -> Judged:
    """The judge verdicts every judge section reads, checked once per report."""
    return context.shared("ecap_judges.judged", lambda: _judged(context))


def _judged(context: ReportContext) -> Judged:
    every = [f for f in context.verdicts() if f.kind == "model"]
    wanted = context.options.judge
    judges = Counter(f.judge for f in every)
    if wanted and not judges:
        present = context.judges_in_store()
        raise EcapError(
            f"no verdicts from judge '{wanted}' in this selection"
            + (f"; judges in the store: {_listing(present)}" if present else "")
        )
    if len(judges) > 1:
        raise EcapError(
            f"verdicts from {len(judges)} judges ({_listing(judges)}); choose one with --judge"
        )
    if judges:
        context.meta["judge"] = next(iter(judges))
    latest, superseded = latest_per_instruction(every)
    if superseded:
        context.notes.append(
            f"{superseded} older judge verdict(s) were superseded by a later verdict for the "
            "same instruction"
        )
    rubrics = Counter(f.rubric for f in every)
    if len(rubrics) > 1:
        listed = ", ".join(f"{r.label} ({n})" for r, n in sorted(rubrics.items(), key=_by_label))
        context.notes.append(
            f"judge verdicts follow {len(rubrics)} rubrics ({listed}); each has its own rows, "
            "since their scores are different formulas"
        )
    return Judged(every, latest, len(rubrics) > 1)


def _by_label(item: tuple[Rubric, int]) -> str:
    return item[0].label


def _listing(counts: Counter[str]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def _metric(fact: VerdictFact, metric: str) -> float | None:
    return fact.weighted if metric == "S" else fact.axes.get(metric)


def score_rows(
    context: ReportContext,
    facts: Sequence[VerdictFact],
    by_rubric: bool,
    *,
    table: str,
    selection: str | None = None,
) -> list[Row]:
    """One row of metric means per (rubric,) model and benchmark."""
    groups: dict[tuple[str, ...], list[VerdictFact]] = defaultdict(list)
    for fact in facts:
        tag = (fact.rubric.label,) if by_rubric else ()
        groups[(*tag, fact.model, fact.benchmark)].append(fact)
    rows = []
    for key in sorted(groups, key=lambda k: (k[:-2], by_model_order(*k[-2:]))):
        members = groups[key]
        *rubric, model, benchmark = key
        keys = {
            **({"selection": selection} if selection is not None else {}),
            **({"rubric": rubric[0]} if rubric else {}),
            "model": model,
            "benchmark": benchmark,
        }
        values = {
            m.key: context.mean(
                [v for f in members if (v := _metric(f, m.key)) is not None],
                table,
                selection or "",
                *rubric,
                model,
                benchmark,
                m.key,
            )
            for m in METRICS
        }
        rows.append(Row(keys, dict(values), len(members)))
    return rows


class ScoresSection(ReportSection):
    order = 10

    def tables(self, context: ReportContext) -> list[Table]:
        found = judged(context)
        rows = score_rows(context, found.latest, found.several_rubrics, table="scores")
        context.meta["models"] = ordered(r.keys["model"] for r in rows)
        context.meta["benchmarks"] = ordered(r.keys["benchmark"] for r in rows)
        return [
            Table(
                name="scores",
                title="Judge scores by model and benchmark",
                blurb="Mean judge scores (1-5) per model and benchmark; S is the judge's "
                "weighted score.",
                keys=[
                    *([RUBRIC] if found.several_rubrics else []),
                    Column("model", "Model"),
                    Column("benchmark", "Benchmark"),
                ],
                values=list(METRICS),
                rows=rows,
                pivot="benchmark",
                chart=Chart("per_column", "score (1-5)", SCORE_CHART_MAX),
            )
        ]


class AblationSection(ReportSection):
    order = 30

    def tables(self, context: ReportContext) -> list[Table]:
        found = judged(context)
        chosen = selections(context.options.runs, context.options.steps)
        rows: list[Row] = []
        if len(chosen) >= 2:
            for selection in chosen:
                latest, _ = latest_per_instruction(f for f in found.every if selection.matches(f))
                if not latest:
                    context.notes.append(f"selection '{selection.label}' has no judge verdicts")
                rows.extend(
                    score_rows(
                        context,
                        latest,
                        found.several_rubrics,
                        table="ablation",
                        selection=selection.label,
                    )
                )
            labels = [s.label for s in chosen]
            rows.sort(
                key=lambda r: (
                    r.keys["benchmark"].casefold(),
                    labels.index(r.keys["selection"]),
                    r.keys.get("rubric", ""),
                    r.keys["model"].casefold(),
                )
            )
        rubric = ["rubric"] if found.several_rubrics else []
        return [
            Table(
                name="ablation",
                title="Ablation",
                blurb="The selected runs or steps side by side.",
                keys=[
                    Column("selection", "Selection"),
                    *([RUBRIC] if found.several_rubrics else []),
                    Column("model", "Model"),
                    Column("benchmark", "Benchmark"),
                ],
                values=list(METRICS),
                rows=rows,
                chart=Chart("grouped", "score (1-5)", SCORE_CHART_MAX),
                display=["benchmark", "selection", *rubric, "model"],
            )
        ]


class AgreementSection(ReportSection):
    order = 40

    def tables(self, context: ReportContext) -> list[Table]:
        found = judged(context)
        grades = human_grades(context)
        paired: dict[tuple[str, ...], list[tuple[float, int]]] = defaultdict(list)
        for fact in found.latest:
            if fact.weighted is None or fact.instruction_id not in grades:
                continue
            pair = (fact.weighted, usability(grades[fact.instruction_id][1]))
            tag = (fact.rubric.label,) if found.several_rubrics else ()
            paired[(*tag, "all")].append(pair)
            paired[(*tag, fact.model)].append(pair)
        rows = []
        for key in sorted(paired, key=lambda k: (k[:-1], k[-1] != "all", by_model_order(k[-1]))):
            xs, ys = zip(*paired[key], strict=True)
            *rubric, model = key
            keys = {**({"rubric": rubric[0]} if rubric else {}), "model": model}
            rows.append(Row(keys, {"spearman": spearman(xs, ys)}, len(xs)))
        return [
            Table(
                name="agreement",
                title="Judge-human agreement",
                blurb="Spearman rank correlation between judge S and human usability "
                "(correct 3, P2 2, P1 1, P0 0) on instructions graded by both.",
                keys=[*([RUBRIC] if found.several_rubrics else []), Column("model", "Model")],
                values=[Column("spearman", "Spearman rho", digits=3)],
                rows=rows,
            )
        ]


__all__ = [
    "METRICS",
    "AblationSection",
    "AgreementSection",
    "Judged",
    "ScoresSection",
    "Selection",
    "judged",
    "latest_per_instruction",
    "score_rows",
    "selections",
]
