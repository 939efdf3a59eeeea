"""The filters section of ``ecap report``: what each filter step kept and dropped, and why.

Decisions are not stored: a filter step stores its scores, and what passes is decided from them
on every run (:mod:`ecap.keep`), so that a changed threshold re-scores nothing. This section does
the same: it rebuilds the filter of each filter step's latest step run from the config that run
used and decides that step's stored scores again (:func:`redecide`, which ``ecap filter retune``
shares). Its tables:

- **Filter steps**: rows scored, kept, dropped and the keep rate per step.
- **Keep rate per rule**: what each part of the step's keep rule keeps on its own (the members of
  a top-level ``all_of``, each ``unflagged`` flag apart), for filters with an :mod:`ecap.keep`
  rule.
- **Score histograms**: per step, one histogram of every numeric score component that is not a
  0/1 flag, ten equal bins over the step's range, with each category's count and share.
- **Dropped rows**: a few examples per step with their reason, spread over the rule parts that
  dropped them.

With ``--run`` the latest step run of each filter step within those runs is read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EcapError
from .query import StepRunFact, step_runs
from .sections import ReportContext, ReportOptions, ReportSection
from .table import Chart, Column, Row, Table, Value

if TYPE_CHECKING:
    from ..interfaces import KeepDecision
    from ..keep import Scored
    from ..records import Item
    from ..store import Store

#: Shown for pairs without a category.
NO_CATEGORY = "(none)"
#: Equal-width bins of each score histogram.
BINS = 10
#: Examples of dropped rows per filter step.
EXAMPLES = 5
#: Longest instruction text an example shows.
EXAMPLE_CHARS = 120


@dataclass(frozen=True)
class Redecided:
    """A filter step's stored outputs (``items``) decided again: one decision per item, the
    :mod:`ecap.keep` rule that decided (``None`` for a filter with its own ``decide``), and the
    component a rule without one reads."""

    items: list[Item]
    decisions: list[KeepDecision]
    rule: Any
    default_component: str

    def scored(self) -> list[Scored]:
        return [(item.score, item.pair.category) for item in self.items if item.score is not None]

    def parts(self) -> dict[str, list[bool]]:
        """What each part of the rule keeps on its own, over :meth:`scored` (see
        :func:`ecap.keep.breakdown`); nothing for a filter without a keep rule."""
        from ..keep import breakdown

        if self.rule is None:
            return {}
        return breakdown(self.rule, self.scored(), self.default_component)

    @property
    def kept(self) -> int:
        return sum(d.keep for d in self.decisions)


def redecide(
    store: Store, step_run: StepRunFact, items: Sequence[Item], keep: Any = None
) -> Redecided:
    """``items`` (the step's stored outputs) decided by the filter ``step_run`` ran, rebuilt from
    the config it ran with; ``keep`` (a rule's YAML shape) replaces that config's keep rule. No
    model is called: building a filter loads nothing."""
    from ..interfaces import Filter, PluginContext
    from ..plugins import get_registry

    if step_run.kind != "filter":
        raise EcapError(f"step {step_run.step_id!r} is a {step_run.kind} step, not a filter")
    info = get_registry().get("filter", step_run.plugin)
    config_model = info.cls.Config
    has_rule = "keep" in config_model.model_fields
    if keep is not None and not has_rule:
        raise EcapError(
            f"filter {step_run.plugin!r} has no `keep` rule (ecap.keep); its thresholds can only "
            "be changed in the spec"
        )
    run = store.run(step_run.run_id)
    spec_dir = Path(run["spec_path"]).parent if run and run.get("spec_path") else Path.cwd()
    context = PluginContext(step_id=step_run.step_id, base_dir=spec_dir, work_dir=spec_dir)
    raw = {**step_run.config, **({"keep": keep} if keep is not None else {})}
    try:
        plugin = info.cls(config_model.model_validate(raw), context)
    except ValueError as exc:
        raise EcapError(f"the keep rule does not fit filter {step_run.plugin!r}: {exc}") from exc
    assert isinstance(plugin, Filter)
    return Redecided(
        items=list(items),
        decisions=plugin.decide(items),
        rule=getattr(plugin.config, "keep", None) if has_rule else None,
        default_component=getattr(info.cls, "default_component", "score"),
    )


@dataclass(frozen=True)
class FilterStep:
    """One filter step as this section reports it: its latest step run and the decisions."""

    step_run: StepRunFact
    decided: Redecided


def filter_steps(context: ReportContext) -> list[FilterStep]:
    """The latest step run of every filter step in the selected runs, decided again; once per
    report. A step whose filter cannot be rebuilt (its plugin is gone) is named in the notes."""
    return context.shared("ecap.filter_steps", lambda: _filter_steps(context))


def _filter_steps(context: ReportContext) -> list[FilterStep]:
    runs = ReportOptions.ids(context.options.runs)
    latest: dict[str, StepRunFact] = {}
    for step_run in step_runs(context.store, kind="filter", runs=runs):
        latest[step_run.step_id] = step_run  # oldest first: the last one wins
    found = []
    for step_id in sorted(latest):
        step_run = latest[step_id]
        items = context.store.step_outputs(step_run.step_key)
        if not items:
            continue
        try:
            decided = redecide(context.store, step_run, items)
        except EcapError as exc:
            context.notes.append(f"filter step '{step_id}' left out: {exc}")
            continue
        found.append(FilterStep(step_run, decided))
    return found


def _rate(kept: int, total: int) -> float | None:
    return 100.0 * kept / total if total else None


def _category(item: Item) -> str:
    return item.pair.category or NO_CATEGORY


KEEP_COLUMNS = [
    Column("kept", "Kept", digits=0),
    Column("dropped", "Dropped", digits=0),
    Column("keep_rate", "Keep rate", digits=1, suffix="%"),
]


class FiltersSection(ReportSection):
    order = 50

    def tables(self, context: ReportContext) -> list[Table]:
        steps = filter_steps(context)
        if not steps:
            return []  # no filter step: no empty tables, whose keys would widen the CSV
        return [
            Table(
                name="filter_steps",
                title="Filter steps",
                blurb="Rows each filter step scored and how many its keep rule keeps, decided "
                "again from the stored scores with the config of the step's latest run "
                "(failed: samples that got no score).",
                keys=[Column("step", "Step"), Column("plugin", "Filter")],
                values=[*KEEP_COLUMNS, Column("failed", "Failed", digits=0)],
                rows=[self._step_row(s) for s in steps],
            ),
            Table(
                name="filter_rules",
                title="Keep rate per rule",
                blurb="What each part of a step's keep rule keeps on its own (each flag of "
                "`unflagged` apart); a row is dropped when any part drops it.",
                keys=[Column("step", "Step"), Column("rule", "Rule")],
                values=list(KEEP_COLUMNS),
                rows=[row for s in steps for row in self._rule_rows(s)],
            ),
            self._histograms(steps),
            Table(
                name="filter_dropped",
                title="Dropped rows",
                blurb=f"Up to {EXAMPLES} dropped rows per filter step with the reason, one per "
                "rule part in turn.",
                keys=[
                    Column("step", "Step"),
                    Column("pair", "Pair"),
                    Column("category", "Category"),
                    Column("instruction", "Instruction"),
                    Column("reason", "Reason"),
                ],
                values=[],
                rows=[row for s in steps for row in self._examples(s)],
            ),
        ]

    @staticmethod
    def _step_row(found: FilterStep) -> Row:
        total, kept = len(found.decided.items), found.decided.kept
        values: dict[str, Value] = {
            "kept": float(kept),
            "dropped": float(total - kept),
            "keep_rate": _rate(kept, total),
            "failed": float(found.step_run.counts.get("failed", 0)),
        }
        return Row({"step": found.step_run.step_id, "plugin": found.step_run.plugin}, values, total)

    @staticmethod
    def _rule_rows(found: FilterStep) -> list[Row]:
        rows = []
        for part, keeps in found.decided.parts().items():
            kept = sum(keeps)
            values: dict[str, Value] = {
                "kept": float(kept),
                "dropped": float(len(keeps) - kept),
                "keep_rate": _rate(kept, len(keeps)),
            }
            rows.append(Row({"step": found.step_run.step_id, "rule": part}, values, len(keeps)))
        return rows

    @staticmethod
    def _histograms(steps: Sequence[FilterStep]) -> Table:
        rows = []
        for found in steps:
            rows.extend(histogram_rows(found.step_run.step_id, found.decided.items))
        return Table(
            name="filter_histograms",
            title="Score histograms",
            blurb=f"Rows per score bin ({BINS} equal bins over each step's range; the last bin "
            "holds its upper edge) and category: n rows, their share of the category.",
            keys=[
                Column("step", "Step"),
                Column("component", "Component"),
                Column("bin", "Bin"),
                Column("category", "Category"),
            ],
            values=[Column("share", "%", digits=1, suffix="%")],
            rows=rows,
            pivot="category",
            chart=Chart("histogram", "rows", x="bin"),
        )

    @staticmethod
    def _examples(found: FilterStep) -> list[Row]:
        decided = found.decided
        parts = decided.parts()
        scored = [i for i, item in enumerate(decided.items) if item.score is not None]
        rank = {position: index for index, position in enumerate(scored)}  # into parts' lists
        by_part: dict[str, list[tuple[Item, str]]] = defaultdict(list)
        dropped = [
            (position, item, d.reason)
            for position, (item, d) in enumerate(zip(decided.items, decided.decisions, strict=True))
            if not d.keep
        ]
        for position, item, reason in sorted(dropped, key=lambda pir: _order(pir[1])):
            index = rank.get(position)
            part = next(
                (p for p, keeps in parts.items() if index is not None and not keeps[index]), ""
            )
            by_part[part].append((item, reason))
        chosen: list[tuple[Item, str]] = []
        queues = [by_part[part] for part in sorted(by_part)]
        while len(chosen) < EXAMPLES and any(queues):
            for queue in queues:
                if queue and len(chosen) < EXAMPLES:
                    chosen.append(queue.pop(0))
        return [
            Row(
                {
                    "step": found.step_run.step_id,
                    "pair": item.pair.id,
                    "category": _category(item),
                    "instruction": _shorten(item.instruction.text if item.instruction else ""),
                    "reason": reason or "(no reason given)",
                },
                {},
                1,
            )
            for item, reason in chosen
        ]


def _order(item: Item) -> tuple[str, str]:
    return item.pair.id, item.instruction.id if item.instruction else ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def histogram_rows(step: str, items: Sequence[Item]) -> list[Row]:
    """Histogram rows of every numeric component of the items' scores that is not a 0/1 flag:
    one row per (component, bin, category), ``n`` rows there and their share of the category."""
    values: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for item in items:
        if item.score is None:
            continue
        for name, value in item.score.values.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                values[name].append((float(value), _category(item)))  # NaN != NaN: left out
    rows = []
    for component in sorted(values):
        found = values[component]
        if all(v in (0.0, 1.0) for v, _ in found):
            continue  # a flag: the rule table says how often it fires
        edges = _edges([v for v, _ in found])
        per_category = Counter(c for _, c in found)
        counts: Counter[tuple[int, str]] = Counter((_bin(v, edges), c) for v, c in found)
        for index in range(len(edges) - 1):
            label = _bin_label(edges, index)
            for category in sorted(per_category, key=lambda c: (c == NO_CATEGORY, c)):
                n = counts[index, category]
                keys = {"step": step, "component": component, "bin": label, "category": category}
                share: dict[str, Value] = {"share": 100.0 * n / per_category[category]}
                rows.append(Row(keys, share, n))
    return rows


def _edges(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    if low == high:
        return [low, high]
    width = (high - low) / BINS
    return [low + i * width for i in range(BINS)] + [high]


def _bin(value: float, edges: Sequence[float]) -> int:
    for index in range(len(edges) - 2, -1, -1):
        if value >= edges[index]:
            return index
    return 0


def _bin_label(edges: Sequence[float], index: int) -> str:
    """``[low, high)``; the last bin holds its upper edge: ``[low, high]``."""
    close = "]" if index == len(edges) - 2 else ")"
    return f"[{edges[index]:.4g}, {edges[index + 1]:.4g}{close}"


__all__ = [
    "FilterStep",
    "FiltersSection",
    "Redecided",
    "filter_steps",
    "histogram_rows",
    "redecide",
]
