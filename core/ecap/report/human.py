"""The human grades section: how many human-graded instructions are correct, P0, P1 or P2.

Each instruction counts once: its latest human verdict (highest id), or with the ``worst`` policy
the most severe grade any of its human verdicts gave (see :mod:`ecap.defects`). A verdict with a
code that is not in the checklist is left out and named in the notes.
"""

from __future__ import annotations

from collections import defaultdict

from ..defects import DefectCodeError, Grade, grade, worst
from .query import UNKNOWN, VerdictFact
from .sections import ReportContext, ReportSection
from .table import Chart, Column, Row, Table, Value

#: Grade columns, in the paper's order.
RATES: tuple[Grade, ...] = ("correct", "P0", "P1", "P2")
RATE_LABELS: dict[str, str] = {"correct": "Correct", "P0": "P0", "P1": "P1", "P2": "P2"}


def human_grades(context: ReportContext) -> dict[str, tuple[VerdictFact, Grade]]:
    """instruction id -> (its latest human verdict, the grade that counts), once per report."""
    return context.shared("ecap.human_grades", lambda: _grades(context))


def _grades(context: ReportContext) -> dict[str, tuple[VerdictFact, Grade]]:
    by_instruction: dict[str, list[tuple[VerdictFact, Grade]]] = defaultdict(list)
    invalid: list[str] = []
    for fact in context.verdicts():
        if fact.kind != "human" or fact.instruction_id is None:
            continue
        try:
            value = grade(fact.labels)
        except DefectCodeError as exc:
            invalid.append(f"{fact.verdict_id}: {exc}")
            continue
        by_instruction[fact.instruction_id].append((fact, value))
    if invalid:
        more = f"; and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        context.notes.append(
            f"{len(invalid)} human verdict(s) with invalid defect codes were left out: "
            + "; ".join(invalid[:5])
            + more
        )
    out: dict[str, tuple[VerdictFact, Grade]] = {}
    for instruction_id, graded in by_instruction.items():
        graded.sort(key=lambda fg: fg[0].verdict_id)
        latest, counted = graded[-1]
        if context.options.human == "worst":
            counted = worst(g for _, g in graded)
        out[instruction_id] = (latest, counted)
    return out


def by_model_order(model: str, *rest: str) -> tuple[object, ...]:
    """Sort key of rows keyed by model first: alphabetical, the unknown model last."""
    return (model == UNKNOWN, model.casefold(), *(r.casefold() for r in rest))


class HumanGradesSection(ReportSection):
    order = 20

    def tables(self, context: ReportContext) -> list[Table]:
        groups: dict[tuple[str, str], list[Grade]] = defaultdict(list)
        for fact, value in human_grades(context).values():
            groups[fact.model, fact.benchmark].append(value)
        rows = []
        for (model, benchmark), values in sorted(
            groups.items(), key=lambda g: by_model_order(*g[0])
        ):
            stats: dict[str, Value] = {
                rate: context.mean(
                    [1.0 if v == rate else 0.0 for v in values], "human", model, benchmark, rate
                ).scaled(100.0)
                for rate in RATES
            }
            rows.append(Row({"model": model, "benchmark": benchmark}, stats, len(values)))
        return [
            Table(
                name="human_grades",
                title="Human defect grades",
                blurb="Share of human-graded instructions by most severe defect "
                "(a P0 hides P1 and P2).",
                keys=[Column("model", "Model"), Column("benchmark", "Benchmark")],
                values=[Column(r, RATE_LABELS[r], digits=1, suffix="%") for r in RATES],
                rows=rows,
                chart=Chart("grouped", "% of instructions", 105),
            )
        ]


__all__ = ["RATES", "RATE_LABELS", "HumanGradesSection", "by_model_order", "human_grades"]
