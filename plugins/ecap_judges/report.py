"""``ecap report``: the EditCaption paper's result tables, computed from the store.

- **Scores** (the paper's Table 2): judge means of S, Accuracy, Completeness and Clarity per model
  (rows) and benchmark (columns), each with a 95% bootstrap confidence interval and n.
- **Human grades** (Table 3): per model and benchmark, the share of human-graded instructions that
  are correct, P0, P1 or P2 (see :mod:`ecap.defects`), with intervals and n.
- **Ablation** (Table 4): several run or step selections side by side, per model and benchmark.
- **Agreement**: Spearman's rank correlation between the judge's S and the human usability score
  (correct 3, P2 2, P1 1, P0 0) on the instructions that have both.

Rules the numbers follow:

- A verdict's *model* is its instruction's ``author``, else the step id of the step run that wrote
  the instruction. Its *benchmark* is ``pair.meta["benchmark"]``, else the step id of the step run
  that imported the pair.
- ``--judge``, ``--run`` and ``--step`` select judge verdicts (a run id may be a prefix; a judge
  name may be the plugin alone, ``gemini`` for ``gemini:gemini-2.5-pro``). Human verdicts are
  selected separately by ``--human-run`` and ``--human-step`` (all of them by default), because
  humans usually grade in another step, often in a later run, than the judge.
- Ablation rows: with ``--step`` given, one selection per step (inside the ``--run`` runs, if
  any); otherwise one per ``--run``. ``LABEL=ID`` names a row. Two or more selections are needed
  for the ablation table; the scores table covers all selections together.
- The judge verdicts in a report must come from one judge: mixing judges in one mean would compare
  nothing, so several judges without ``--judge`` is an error that lists them.
- One verdict per instruction: when the same instruction was judged more than once (a re-run after
  a config change), the latest verdict (highest ULID) counts, and the report says how many were
  superseded. Human verdicts likewise: the latest per instruction, or the most severe with
  ``human="worst"``.
- A human verdict with a code that is not in the checklist is left out and named in the notes; a
  verdict without an instruction cannot be grouped and is counted in the notes too.
- Intervals are percentile bootstraps (``resamples`` resamples, default 1000) drawn with the stdlib
  ``random`` seeded from ``seed`` and the cell's own key, so a cell's interval does not change when
  other cells are added. Resampling n values is done either by drawing n indices or, when the
  values take few distinct levels (judge axes, grades), by drawing the level counts from the
  equivalent multinomial distribution; both are the same bootstrap, the second is much faster.

Everything is read with one joined SQLAlchemy Core query (verdict -> step run, instruction ->
its step run, pair -> its step run), so a report over 100k verdicts takes seconds.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import click
from sqlalchemy import JSON, ColumnElement, and_, case, false, func, or_, select, true, type_coerce
from sqlalchemy.orm import aliased

from ecap.cli.common import json_option, open_store, store_option
from ecap.defects import DefectCodeError, Grade, grade, usability, worst
from ecap.errors import EcapError, did_you_mean
from ecap.store.schema import InstructionRow, PairRow, Run, StepRun, VerdictRow

if TYPE_CHECKING:
    from ecap.store import Store

#: Judge metrics, in the paper's column order, with their short labels.
METRICS: tuple[str, ...] = ("S", "accuracy", "completeness", "clarity")
METRIC_LABELS: dict[str, str] = {
    "S": "S",
    "accuracy": "Acc",
    "completeness": "Comp",
    "clarity": "Clar",
}
#: Human grade columns, in the paper's order.
RATES: tuple[Grade, ...] = ("correct", "P0", "P1", "P2")
RATE_LABELS: dict[str, str] = {"correct": "Correct", "P0": "P0", "P1": "P1", "P2": "P2"}
UNKNOWN = "(unknown)"
HumanPolicy = Literal["latest", "worst"]


# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """A mean with its bootstrap interval (``None`` bounds without resamples) over ``n`` values."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}

    def scaled(self, factor: float) -> Stat:
        def s(v: float | None) -> float | None:
            return None if v is None else v * factor

        return Stat(s(self.mean), s(self.low), s(self.high), self.n)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolating linearly between order statistics."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = q * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    fraction = position - below
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * fraction


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact Binomial(n, p) draw from stdlib ``random`` (which has none before Python 3.12).

    Small means (np < 10) count geometric waiting times between successes; larger ones use
    Hoermann's transformed rejection with squeeze (BTRS, 1993), a few microseconds whatever n.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    if n * p < 10:
        log_q = math.log1p(-p)
        successes = trials = 0
        while True:
            trials += int(math.log(1.0 - rng.random()) / log_q) + 1
            if trials > n:
                return successes
            successes += 1
    q = 1.0 - p
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    log_odds = math.log(p / q)
    mode = math.floor((n + 1) * p)
    h = math.lgamma(mode + 1) + math.lgamma(n - mode + 1)
    uniform = rng.random
    while True:
        u = uniform() - 0.5
        v = uniform()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - mode) * log_odds:
            return k


def _resampled_means(values: Sequence[float], resamples: int, rng: random.Random) -> list[float]:
    n = len(values)
    levels = sorted(Counter(values).items())
    # Microseconds to draw one resample each way (measured on CPython 3.11): n index draws,
    # or one binomial per level.
    if 3.0 * len(levels) >= 0.16 * n:
        return [math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples)]
    means = []
    for _ in range(resamples):
        left, left_count, total = n, n, 0.0
        for value, count in levels[:-1]:
            drawn = binomial(rng, left, count / left_count) if left else 0
            total += drawn * value
            left -= drawn
            left_count -= count
        total += left * levels[-1][0]
        means.append(total / n)
    return means


def bootstrap_mean(
    values: Sequence[float], *, resamples: int, rng: random.Random, confidence: float = 0.95
) -> Stat:
    """The mean of ``values`` with a percentile bootstrap interval."""
    n = len(values)
    if n == 0:
        return Stat(None, None, None, 0)
    mean = math.fsum(values) / n
    if resamples <= 0:
        return Stat(mean, None, None, n)
    if min(values) == max(values):
        return Stat(mean, mean, mean, n)
    means = sorted(_resampled_means(values, resamples, rng))
    tail = (1.0 - confidence) / 2
    return Stat(mean, quantile(means, tail), quantile(means, 1.0 - tail), n)


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the average of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for i in range(start, end + 1):
            ranks[order[i]] = rank
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of average ranks. ``None`` when undefined (fewer
    than two pairs, or a side with no variation)."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = math.fsum(rx) / len(rx), math.fsum(ry) / len(ry)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = math.fsum((a - mx) ** 2 for a in rx)
    syy = math.fsum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


# -- selections and rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """A labelled set of judge verdicts: those written by the given runs (id prefixes) and steps.
    An empty ``runs`` or ``steps`` means any."""

    label: str
    runs: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    def matches(self, run_id: str | None, step_id: str | None) -> bool:
        if self.runs and not (run_id and any(run_id.startswith(r) for r in self.runs)):
            return False
        return not self.steps or step_id in self.steps


def split_label(value: str) -> tuple[str, str]:
    """``"LABEL=ID"`` -> (label, id); a bare ``"ID"`` is its own label."""
    label, sep, ref = value.rpartition("=")
    if sep and label.strip() and ref.strip():
        return label.strip(), ref.strip()
    return value.strip(), value.strip()


def selections(runs: Sequence[str], steps: Sequence[str]) -> list[Selection]:
    """The ablation rows. With steps given, one per step (within the given runs, if any);
    otherwise one per run."""
    run_ids = tuple(split_label(r)[1] for r in runs)
    if steps:
        return [Selection(label, run_ids, (ref,)) for label, ref in map(split_label, steps)]
    return [Selection(label, (ref,)) for label, ref in map(split_label, runs)]


class Row(NamedTuple):
    """One verdict, joined with what the tables group it by. The metric fields are named as in
    :data:`METRICS`; ``labels`` are read for human verdicts only."""

    verdict_id: str
    kind: str
    judge: str
    instruction_id: str | None
    run_id: str | None
    step_id: str | None
    model: str
    benchmark: str
    S: float | None
    accuracy: float | None
    completeness: float | None
    clarity: float | None
    labels: tuple[str, ...]


def _matching(column: Any, prefixes: Sequence[str]) -> ColumnElement[bool]:
    return or_(*(column.startswith(p, autoescape=True) for p in prefixes))


def _judge_filter(judge: str | None) -> ColumnElement[bool]:
    if not judge:
        return true()
    return or_(VerdictRow.judge == judge, VerdictRow.judge.startswith(f"{judge}:", autoescape=True))


def load_rows(
    store: Store,
    *,
    judge: str | None = None,
    runs: Sequence[str] = (),
    steps: Sequence[str] = (),
    human_runs: Sequence[str] = (),
    human_steps: Sequence[str] = (),
    humans: bool = True,
) -> list[Row]:
    """Every selected verdict, judge and human, with its model and benchmark: one query."""
    verdict_step = aliased(StepRun, name="verdict_step")
    instruction_step = aliased(StepRun, name="instruction_step")
    pair_step = aliased(StepRun, name="pair_step")

    def scope(kind: str, runs: Sequence[str], steps: Sequence[str]) -> ColumnElement[bool]:
        conditions = [VerdictRow.kind == kind]
        if runs:
            conditions.append(_matching(verdict_step.run_id, runs))
        if steps:
            conditions.append(verdict_step.step_id.in_(list(steps)))
        return and_(*conditions)

    axes = VerdictRow.__table__.c.axes
    stmt = (
        select(
            VerdictRow.id,
            VerdictRow.kind,
            VerdictRow.judge,
            VerdictRow.instruction_id,
            VerdictRow.weighted,
            axes["accuracy"].as_float().label("accuracy"),
            axes["completeness"].as_float().label("completeness"),
            axes["clarity"].as_float().label("clarity"),
            type_coerce(
                case((VerdictRow.kind == "human", VerdictRow.labels), else_=None), JSON
            ).label("labels"),
            verdict_step.run_id,
            verdict_step.step_id,
            InstructionRow.author,
            instruction_step.step_id.label("instruction_step"),
            PairRow.__table__.c.meta["benchmark"].as_string().label("benchmark"),
            pair_step.step_id.label("pair_step"),
        )
        .select_from(VerdictRow)
        .outerjoin(verdict_step, verdict_step.id == VerdictRow.step_run_id)
        .outerjoin(InstructionRow, InstructionRow.id == VerdictRow.instruction_id)
        .outerjoin(instruction_step, instruction_step.id == InstructionRow.step_run_id)
        .outerjoin(PairRow, PairRow.id == VerdictRow.pair_id)
        .outerjoin(pair_step, pair_step.id == PairRow.step_run_id)
        .where(
            or_(
                and_(scope("model", runs, steps), _judge_filter(judge)),
                scope("human", human_runs, human_steps) if humans else false(),
            )
        )
    )
    with store.engine.connect() as conn:
        return [
            Row(
                vid,
                kind,
                judge,
                instruction_id,
                run_id,
                step_id,
                author or instruction_step or UNKNOWN,
                str(benchmark) if benchmark is not None else pair_step or UNKNOWN,
                weighted,
                accuracy,
                completeness,
                clarity,
                tuple(labels or ()),
            )
            for (
                vid,
                kind,
                judge,
                instruction_id,
                weighted,
                accuracy,
                completeness,
                clarity,
                labels,
                run_id,
                step_id,
                author,
                instruction_step,
                benchmark,
                pair_step,
            ) in conn.execute(stmt).fetchall()
        ]


def latest_per_instruction(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """The latest verdict (highest id) for each instruction, and how many older ones were left."""
    latest: dict[str, Row] = {}
    total = 0
    for row in rows:
        if row.instruction_id is None:
            continue
        total += 1
        kept = latest.get(row.instruction_id)
        if kept is None or row.verdict_id > kept.verdict_id:
            latest[row.instruction_id] = row
    return sorted(latest.values(), key=lambda r: r.verdict_id), total - len(latest)


# -- the report -------------------------------------------------------------------------------


@dataclass
class Cell:
    """One row of a table: its keys, its n, and one statistic per column."""

    model: str
    benchmark: str
    n: int
    stats: dict[str, Stat]
    selection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = {"selection": self.selection} if self.selection is not None else {}
        return {
            **keys,
            "model": self.model,
            "benchmark": self.benchmark,
            "n": self.n,
            **{k: s.to_dict() for k, s in self.stats.items()},
        }


@dataclass(frozen=True)
class Agreement:
    """Spearman's rho between judge S and human usability over ``n`` instructions."""

    model: str
    rho: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "spearman": self.rho, "n": self.n}


@dataclass
class Report:
    judge: str | None
    seed: int
    resamples: int
    confidence: float
    human_policy: str
    filters: dict[str, list[str]]
    scores: list[Cell] = field(default_factory=list)  # Table 2
    human_grades: list[Cell] = field(default_factory=list)  # Table 3
    ablation: list[Cell] = field(default_factory=list)  # Table 4
    agreement: list[Agreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return _ordered(c.model for c in self.scores)

    @property
    def benchmarks(self) -> list[str]:
        return _ordered(c.benchmark for c in self.scores)

    def cell(self, model: str, benchmark: str) -> Cell | None:
        return next((c for c in self.scores if c.model == model and c.benchmark == benchmark), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "human_policy": self.human_policy,
            "filters": self.filters,
            "models": self.models,
            "benchmarks": self.benchmarks,
            "scores": [c.to_dict() for c in self.scores],
            "human_grades": [c.to_dict() for c in self.human_grades],
            "ablation": [c.to_dict() for c in self.ablation],
            "agreement": [a.to_dict() for a in self.agreement],
            "notes": self.notes,
        }


def _ordered(values: Iterable[str]) -> list[str]:
    return sorted(set(values), key=lambda v: (v == UNKNOWN, v.casefold(), v))


def _check_selection(store: Store, runs: Sequence[str], steps: Sequence[str]) -> None:
    with store.engine.connect() as conn:
        for ref in (split_label(r)[1] for r in runs):
            found = conn.execute(
                select(func.count()).select_from(Run).where(_matching(Run.id, [ref]))
            ).scalar_one()
            if not found:
                raise EcapError(f"no run '{ref}' in {store.redacted_url} (see: ecap runs list)")
        wanted = [split_label(s)[1] for s in steps]
        if wanted:
            known = set(conn.execute(select(StepRun.step_id).distinct()).scalars())
            for step in wanted:
                if step not in known:
                    raise EcapError(
                        f"no step '{step}' in {store.redacted_url}" + did_you_mean(step, known)
                    )


def _judges_present(store: Store) -> Counter[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(VerdictRow.judge, func.count())
            .where(VerdictRow.kind == "model")
            .group_by(VerdictRow.judge)
        )
        return Counter({judge: count for judge, count in rows})


def _listing(counts: Counter[str]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def _rng(seed: int, *key: object) -> random.Random:
    return random.Random("|".join(map(str, (seed, *key))))


def _score_cells(
    rows: Sequence[Row], seed: int, resamples: int, confidence: float, table: str, label: str | None
) -> list[Cell]:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.model, row.benchmark].append(row)
    cells = []
    for (model, benchmark), members in groups.items():
        stats = {}
        for metric in METRICS:
            values = [v for r in members if (v := getattr(r, metric)) is not None]
            rng = _rng(seed, table, label or "", model, benchmark, metric)
            stats[metric] = bootstrap_mean(
                values, resamples=resamples, rng=rng, confidence=confidence
            )
        cells.append(Cell(model, benchmark, len(members), stats, label))
    cells.sort(key=lambda c: (c.model == UNKNOWN, c.model.casefold(), c.benchmark.casefold()))
    return cells


def build_report(
    store: Store,
    *,
    judge: str | None = None,
    runs: Sequence[str] = (),
    steps: Sequence[str] = (),
    human_runs: Sequence[str] = (),
    human_steps: Sequence[str] = (),
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
    human: HumanPolicy = "latest",
) -> Report:
    """Compute every table. ``runs``/``steps`` entries may be ``LABEL=ID`` (labels name the
    ablation rows); two or more selections produce the ablation table."""
    if not 0 < confidence < 1:
        raise EcapError(f"confidence must be between 0 and 1, not {confidence}")
    if human not in ("latest", "worst"):
        raise EcapError(f"human policy must be 'latest' or 'worst', not '{human}'")
    _check_selection(store, [*runs, *human_runs], [*steps, *human_steps])
    run_ids = [split_label(r)[1] for r in runs]
    step_ids = [split_label(s)[1] for s in steps]
    rows = load_rows(
        store,
        judge=judge,
        runs=run_ids,
        steps=step_ids,
        human_runs=[split_label(r)[1] for r in human_runs],
        human_steps=[split_label(s)[1] for s in human_steps],
    )
    report = Report(
        judge=judge,
        seed=seed,
        resamples=resamples,
        confidence=confidence,
        human_policy=human,
        filters={
            "runs": list(runs),
            "steps": list(steps),
            "human_runs": list(human_runs),
            "human_steps": list(human_steps),
        },
    )
    model_rows = [r for r in rows if r.kind == "model"]
    human_rows = [r for r in rows if r.kind == "human"]

    judges = Counter(r.judge for r in model_rows)
    if judge and not judges:
        present = _judges_present(store)
        raise EcapError(
            f"no verdicts from judge '{judge}' in this selection"
            + (f"; judges in the store: {_listing(present)}" if present else "")
        )
    if len(judges) > 1:
        raise EcapError(
            f"verdicts from {len(judges)} judges ({_listing(judges)}); choose one with --judge"
        )
    if judges:
        report.judge = next(iter(judges))

    orphans = sum(1 for r in rows if r.instruction_id is None)
    if orphans:
        report.notes.append(
            f"{orphans} verdict(s) name no instruction and were left out (they cannot be "
            "grouped by model)"
        )

    # Table 2: scores by model and benchmark.
    judged, superseded = latest_per_instruction(model_rows)
    if superseded:
        report.notes.append(
            f"{superseded} older judge verdict(s) were superseded by a later verdict for the "
            "same instruction"
        )
    report.scores = _score_cells(judged, seed, resamples, confidence, "scores", None)

    # Table 4: ablation, one block per selection.
    chosen = selections(runs, steps)
    if len(chosen) >= 2:
        for selection in chosen:
            rows_in = [r for r in model_rows if selection.matches(r.run_id, r.step_id)]
            latest, _ = latest_per_instruction(rows_in)
            if not latest:
                report.notes.append(f"selection '{selection.label}' has no judge verdicts")
            report.ablation.extend(
                _score_cells(latest, seed, resamples, confidence, "ablation", selection.label)
            )
        report.ablation.sort(
            key=lambda c: (
                c.benchmark.casefold(),
                [s.label for s in chosen].index(c.selection or ""),
                c.model.casefold(),
            )
        )

    # Table 3: human grades.
    grades = _human_grades(human_rows, human, report.notes)
    groups: dict[tuple[str, str], list[Grade]] = defaultdict(list)
    for row, value in grades.values():
        groups[row.model, row.benchmark].append(value)
    for (model, benchmark), values in groups.items():
        stats: dict[str, Stat] = {}
        for rate in RATES:
            indicator = [1.0 if v == rate else 0.0 for v in values]
            rng = _rng(seed, "human", model, benchmark, rate)
            stats[rate] = bootstrap_mean(
                indicator, resamples=resamples, rng=rng, confidence=confidence
            ).scaled(100.0)
        report.human_grades.append(Cell(model, benchmark, len(values), stats))
    report.human_grades.sort(
        key=lambda c: (c.model == UNKNOWN, c.model.casefold(), c.benchmark.casefold())
    )

    # Agreement between judge S and human grades on the same instructions.
    paired: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for row in judged:
        s = row.S
        if s is None or row.instruction_id not in grades:
            continue
        pair = (s, usability(grades[row.instruction_id][1]))
        paired[row.model].append(pair)
        paired[""].append(pair)
    if paired:
        for model in ["", *_ordered(m for m in paired if m)]:
            xs, ys = zip(*paired[model], strict=True)
            report.agreement.append(Agreement(model or "all", spearman(xs, ys), len(xs)))
    return report


def _human_grades(
    rows: Sequence[Row], policy: HumanPolicy, notes: list[str]
) -> dict[str, tuple[Row, Grade]]:
    """instruction id -> (its latest human verdict's row, its grade)."""
    by_instruction: dict[str, list[tuple[Row, Grade]]] = defaultdict(list)
    invalid: list[str] = []
    for row in rows:
        if row.instruction_id is None:
            continue
        try:
            value = grade(row.labels)
        except DefectCodeError as exc:
            invalid.append(f"{row.verdict_id}: {exc}")
            continue
        by_instruction[row.instruction_id].append((row, value))
    if invalid:
        shown = "; ".join(invalid[:5]) + (
            f"; and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        )
        notes.append(
            f"{len(invalid)} human verdict(s) with invalid defect codes were left out: {shown}"
        )
    out: dict[str, tuple[Row, Grade]] = {}
    for instruction_id, graded in by_instruction.items():
        graded.sort(key=lambda rg: rg[0].verdict_id)
        latest_row, latest_grade = graded[-1]
        if policy == "worst":
            latest_grade = worst(g for _, g in graded)
        out[instruction_id] = (latest_row, latest_grade)
    return out


# -- renderers --------------------------------------------------------------------------------


def _fmt(stat: Stat | None, digits: int, suffix: str = "") -> str:
    if stat is None or stat.mean is None:
        return "-"
    text = f"{stat.mean:.{digits}f}{suffix}"
    if stat.low is not None and stat.high is not None:
        text += f" [{stat.low:.{digits}f}, {stat.high:.{digits}f}]"
    return text


def _digits(metric: str) -> int:
    return 3 if metric == "S" else 2


def _summary(report: Report) -> str:
    judge = f"judge `{report.judge}`" if report.judge else "no judge verdicts"
    ci = (
        f"{report.confidence:.0%} bootstrap intervals in brackets "
        f"({report.resamples} resamples, seed {report.seed})"
        if report.resamples > 0
        else "no intervals (0 resamples)"
    )
    return f"{judge}; {ci}; n = samples in each cell."


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    body.extend(line(r) for r in rows)
    return body


def _scores_grid(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["Model"]
    for benchmark in report.benchmarks:
        header.extend(f"{benchmark} {METRIC_LABELS[m]}" for m in METRICS)
        header.append(f"{benchmark} n")
    rows = []
    for model in report.models:
        line = [model]
        for benchmark in report.benchmarks:
            cell = report.cell(model, benchmark)
            line.extend(_fmt(cell.stats[m] if cell else None, _digits(m)) for m in METRICS)
            line.append(str(cell.n) if cell else "0")
        rows.append(line)
    return header, rows


def _human_grid(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "Benchmark", *(RATE_LABELS[r] for r in RATES), "n"]
    rows = [
        [c.model, c.benchmark, *(_fmt(c.stats[r], 1, "%") for r in RATES), str(c.n)]
        for c in report.human_grades
    ]
    return header, rows


def _ablation_grid(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["Benchmark", "Selection", "Model", *(METRIC_LABELS[m] for m in METRICS), "n"]
    rows = [
        [
            c.benchmark,
            c.selection or "",
            c.model,
            *(_fmt(c.stats[m], _digits(m)) for m in METRICS),
            str(c.n),
        ]
        for c in report.ablation
    ]
    return header, rows


def _agreement_grid(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "Spearman rho", "n"]
    rows = [[a.model, "-" if a.rho is None else f"{a.rho:.3f}", str(a.n)] for a in report.agreement]
    return header, rows


SECTIONS = (
    (
        "scores",
        "Judge scores by model and benchmark",
        "Mean judge scores (1-5) per model and benchmark; S is the judge's weighted score.",
        _scores_grid,
    ),
    (
        "human_grades",
        "Human defect grades",
        "Share of human-graded instructions by most severe defect (a P0 hides P1 and P2).",
        _human_grid,
    ),
    (
        "ablation",
        "Ablation",
        "The selected runs or steps side by side.",
        _ablation_grid,
    ),
    (
        "agreement",
        "Judge-human agreement",
        "Spearman rank correlation between judge S and human usability "
        "(correct 3, P2 2, P1 1, P0 0) on instructions graded by both.",
        _agreement_grid,
    ),
)


def render_markdown(report: Report) -> str:
    out = ["# ecap report", "", _summary(report), ""]
    for key, title, blurb, grid in SECTIONS:
        if not getattr(report, key):
            continue
        header, rows = grid(report)
        out.extend([f"## {title}", "", blurb, "", *_md_table(header, rows), ""])
    if not (report.scores or report.human_grades):
        out.extend(["No judge or human verdicts match this selection.", ""])
    if report.notes:
        out.extend(["## Notes", "", *(f"- {n}" for n in report.notes), ""])
    return "\n".join(out)


CSV_COLUMNS = (
    "table",
    "selection",
    "model",
    "benchmark",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n",
)


def render_csv(report: Report) -> str:
    """One tidy row per table cell and statistic (human rates in percent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table, cells in (
        ("scores", report.scores),
        ("human_grades", report.human_grades),
        ("ablation", report.ablation),
    ):
        for c in cells:
            for metric, s in c.stats.items():
                writer.writerow(
                    [
                        table,
                        c.selection or "",
                        c.model,
                        c.benchmark,
                        metric,
                        *(_num(v) for v in (s.mean, s.low, s.high)),
                        s.n,
                    ]
                )
    for a in report.agreement:
        writer.writerow(["agreement", "", a.model, "", "spearman", _num(a.rho), "", "", a.n])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


# -- HTML with charts -------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d2430; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
p.meta { color: #555; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d6dbe3; padding: .3rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f2f4f8; } td.key, th.key { text-align: left; }
td .ci { color: #6b7380; font-size: .85em; }
img.chart { max-width: 100%; display: block; margin: .5rem 0 1rem; }
ul.notes li { color: #8a4b00; }
"""


def _html_stat(stat: Stat | None, digits: int, suffix: str = "") -> str:
    if stat is None or stat.mean is None:
        return "-"
    text = f"{stat.mean:.{digits}f}{suffix}"
    if stat.low is not None and stat.high is not None:
        text += f' <span class="ci">[{stat.low:.{digits}f}, {stat.high:.{digits}f}]</span>'
    return text


def _html_rows(rows: Iterable[Sequence[str]], keys: int) -> str:
    out = []
    for row in rows:
        cells = [
            f'<td class="key">{html.escape(v)}</td>' if i < keys else f"<td>{v}</td>"
            for i, v in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out)


def _html_scores(report: Report) -> str:
    top = '<tr><th class="key" rowspan="2">Model</th>' + "".join(
        f'<th colspan="{len(METRICS) + 1}">{html.escape(b)}</th>' for b in report.benchmarks
    )
    sub = "<tr>" + "".join(
        "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRICS) + "<th>n</th>"
        for _ in report.benchmarks
    )
    rows = []
    for model in report.models:
        line = [model]
        for benchmark in report.benchmarks:
            cell = report.cell(model, benchmark)
            line.extend(_html_stat(cell.stats[m] if cell else None, _digits(m)) for m in METRICS)
            line.append(str(cell.n) if cell else "0")
        rows.append(line)
    return f"<table>{top}</tr>{sub}</tr>\n{_html_rows(rows, 1)}</table>"


def _html_simple(header: Sequence[str], rows: list[list[str]], keys: int) -> str:
    head = "".join(
        f'<th class="key">{html.escape(h)}</th>' if i < keys else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    return f"<table><tr>{head}</tr>\n{_html_rows(rows, keys)}</table>"


def _html_human(report: Report) -> str:
    rows = [
        [c.model, c.benchmark, *(_html_stat(c.stats[r], 1, "%") for r in RATES), str(c.n)]
        for c in report.human_grades
    ]
    return _html_simple(["Model", "Benchmark", *(RATE_LABELS[r] for r in RATES), "n"], rows, 2)


def _html_ablation(report: Report) -> str:
    rows = [
        [
            c.benchmark,
            c.selection or "",
            c.model,
            *(_html_stat(c.stats[m], _digits(m)) for m in METRICS),
            str(c.n),
        ]
        for c in report.ablation
    ]
    header = ["Benchmark", "Selection", "Model", *(METRIC_LABELS[m] for m in METRICS), "n"]
    return _html_simple(header, rows, 3)


def _html_agreement(report: Report) -> str:
    header, rows = _agreement_grid(report)
    return _html_simple(header, rows, 1)


def _bars(
    ax: Any,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Stat | None]]],
    ylabel: str,
) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series, CI error bars."""
    width = 0.8 / max(len(series), 1)
    for i, (name, stats) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [s.mean if s and s.mean is not None else math.nan for s in stats]
        below = [
            h - s.low if s and s.low is not None else 0.0
            for h, s in zip(heights, stats, strict=True)
        ]
        above = [
            s.high - h if s and s.high is not None else 0.0
            for h, s in zip(heights, stats, strict=True)
        ]
        ax.bar(xs, heights, width, label=name, yerr=[below, above], capsize=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        groups, rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center"
    )
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")


def _figure(width_groups: int, rows: int = 1, cols: int = 1) -> Any:
    from ecap.interfaces import require

    require("matplotlib", "report", "report")
    figure_module = require("matplotlib.figure", "report", "report")
    width = min(max(6.0, 1.2 * width_groups * cols), 18.0)
    figure = figure_module.Figure(figsize=(width, 4.0 * rows), layout="constrained")
    return figure


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def chart_scores(report: Report) -> str:
    models = report.models
    figure = _figure(len(models), rows=2, cols=2)
    axes = figure.subplots(2, 2, squeeze=False)
    for ax, metric in zip((a for row in axes for a in row), METRICS, strict=True):
        series = [
            (b, [(c.stats[metric] if (c := report.cell(m, b)) else None) for m in models])
            for b in report.benchmarks
        ]
        _bars(ax, models, series, METRIC_LABELS[metric])
        ax.set_ylim(0, 5.3)
    return _png(figure)


def _group_labels(cells: Sequence[Cell], with_benchmark: bool) -> list[str]:
    return [
        " · ".join(
            [
                *([c.selection] if c.selection else []),
                c.model,
                *([c.benchmark] if with_benchmark else []),
            ]
        )
        for c in cells
    ]


def chart_human(report: Report) -> str:
    cells = report.human_grades
    several = len({c.benchmark for c in cells}) > 1
    figure = _figure(len(cells))
    ax = figure.subplots()
    series = [(RATE_LABELS[r], [c.stats[r] for c in cells]) for r in RATES]
    _bars(ax, _group_labels(cells, several), series, "% of instructions")
    ax.set_ylim(0, 105)
    return _png(figure)


def chart_ablation(report: Report) -> str:
    cells = report.ablation
    figure = _figure(len(cells))
    ax = figure.subplots()
    series = [(METRIC_LABELS[m], [c.stats[m] for c in cells]) for m in METRICS]
    _bars(ax, _group_labels(cells, True), series, "score (1-5)")
    ax.set_ylim(0, 5.3)
    return _png(figure)


def render_html(report: Report) -> str:
    """A self-contained page: inline CSS, tables, and one bar chart per table as inline PNG."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ecap report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>ecap report</h1>",
        f'<p class="meta">{html.escape(_summary(report).replace("`", ""))}</p>',
    ]
    renderers = {
        "scores": (_html_scores, chart_scores),
        "human_grades": (_html_human, chart_human),
        "ablation": (_html_ablation, chart_ablation),
        "agreement": (_html_agreement, None),
    }
    for key, title, blurb, _ in SECTIONS:
        if not getattr(report, key):
            continue
        table, chart = renderers[key]
        parts.extend(
            [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(blurb)}</p>", table(report)]
        )
        if chart is not None:
            parts.append(
                f'<img src="data:image/png;base64,{chart(report)}" class="chart" '
                f'alt="{html.escape(title)} chart">'
            )
    if not (report.scores or report.human_grades):
        parts.append("<p>No judge or human verdicts match this selection.</p>")
    if report.notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts.extend(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


RENDERERS = {"md": render_markdown, "csv": render_csv, "html": render_html}


# -- command ----------------------------------------------------------------------------------


@click.command("report")
@store_option
@click.option(
    "--judge",
    default=None,
    help="Judge whose verdicts to report: its full name (gemini:gemini-2.5-pro) or plugin "
    "(gemini). Needed when the selection holds verdicts from several judges.",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    metavar="[LABEL=]RUN",
    help="Only judge verdicts written by this run (an id or id prefix). Repeat for several; two "
    "or more runs are also compared side by side in the ablation table.",
)
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="[LABEL=]STEP",
    help="Only judge verdicts written by this step id. Repeat to compare steps in the ablation "
    "table (within the --run runs, if given).",
)
@click.option(
    "--human-run",
    "human_runs",
    multiple=True,
    metavar="RUN",
    help="Only human verdicts written by this run (default: every human verdict).",
)
@click.option(
    "--human-step",
    "human_steps",
    multiple=True,
    metavar="STEP",
    help="Only human verdicts written by this step id.",
)
@click.option(
    "--humans",
    "human_policy",
    type=click.Choice(["latest", "worst"]),
    default="latest",
    show_default=True,
    help="With several human verdicts for one instruction: the latest, or the most severe.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "html"]),
    default="md",
    show_default=True,
    help="Markdown tables, tidy CSV, or a self-contained HTML page with charts.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
@json_option
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--resamples",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
def report_command(
    store_ref: str | None,
    judge: str | None,
    runs: tuple[str, ...],
    steps: tuple[str, ...],
    human_runs: tuple[str, ...],
    human_steps: tuple[str, ...],
    human_policy: HumanPolicy,
    fmt: str,
    output: Path | None,
    as_json: bool,
    seed: int,
    resamples: int,
) -> None:
    """The paper's tables from the store: judge scores per model and benchmark, human defect
    grades, an ablation of runs or steps, and judge-human agreement, with 95% bootstrap
    intervals and n in every cell.

    Runs and steps may be labelled for the ablation table: --run "SFT only=01J9Z...".
    """
    if fmt == "html" and output is None and not as_json and sys.stdout.isatty():
        raise click.UsageError("an HTML report needs -o FILE (or redirect standard output)")
    store = open_store(store_ref)
    try:
        report = build_report(
            store,
            judge=judge,
            runs=runs,
            steps=steps,
            human_runs=human_runs,
            human_steps=human_steps,
            seed=seed,
            resamples=resamples,
            human=human_policy,
        )
    finally:
        store.close()
    text = render_json(report) + "\n" if as_json else RENDERERS[fmt](report)
    for note in report.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


__all__ = [
    "Agreement",
    "Cell",
    "Report",
    "Selection",
    "Stat",
    "average_ranks",
    "binomial",
    "bootstrap_mean",
    "build_report",
    "load_rows",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "report_command",
    "spearman",
]
