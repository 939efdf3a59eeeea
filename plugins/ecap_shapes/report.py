"""The failure-mode section of ``ecap report``: how often each model's instructions make each
mistake, the paper's orientation and viewpoint errors first.

A judge that tags failure modes writes them into ``Verdict.labels`` (the ``shapes-rules`` judge
defines them: :data:`ecap_shapes.judge.FAILURE_MODES`). Per judge step and model (the
instruction's author, else the step that wrote it) the table gives the mean weighted score S and
the share of verdicts carrying each tag, with bootstrap intervals and n. Any judge that writes
these tags is reported alike; a judge that never wrote one of them (an LLM judge without tags) is
left out, since its zero rates would mean "not measured", not "no errors".

Each instruction counts once per judge step: its latest verdict there. The report's ``--judge``,
``--run`` and ``--step`` select the verdicts as for the judge tables.
"""

from __future__ import annotations

from collections import defaultdict

from ecap.report import Column, ReportContext, ReportSection, Row, Table, VerdictFact
from ecap.report.human import by_model_order
from ecap.report.table import Value

from .judge import FAILURE_MODES, ORIENTATION, VIEWPOINT

#: Tags in the table's column order: the paper's two first, then as the judge lists them.
TAGS: tuple[str, ...] = (
    ORIENTATION,
    VIEWPOINT,
    *(t for t in FAILURE_MODES if t not in (ORIENTATION, VIEWPOINT)),
)
#: Tags shown even where no verdict carries them; the others only where some verdict does.
ALWAYS = (ORIENTATION, VIEWPOINT)


def tagged_verdicts(context: ReportContext) -> list[VerdictFact]:
    """The latest judge verdict per (judge step, instruction), from judges that tag failures."""
    model_verdicts = [
        f for f in context.verdicts() if f.kind == "model" and f.instruction_id is not None
    ]
    tagging = {f.judge for f in model_verdicts if any(label in FAILURE_MODES for label in f.labels)}
    latest: dict[tuple[str | None, str | None], VerdictFact] = {}
    for fact in model_verdicts:
        if fact.judge not in tagging:
            continue
        key = (fact.step_id, fact.instruction_id)
        if key not in latest or fact.verdict_id > latest[key].verdict_id:
            latest[key] = fact
    return list(latest.values())


def _label(tag: str) -> str:
    return tag.replace("_", " ").capitalize()


class FailureModesSection(ReportSection):
    order = 45

    def tables(self, context: ReportContext) -> list[Table]:
        facts = tagged_verdicts(context)
        if not facts:
            return []  # no tagging judge: no empty table, whose keys would widen the CSV
        seen = {label for f in facts for label in f.labels}
        tags = [t for t in TAGS if t in ALWAYS or t in seen]
        groups: dict[tuple[str, str], list[VerdictFact]] = defaultdict(list)
        for fact in facts:
            groups[fact.step_id or "", fact.model].append(fact)
        rows = []
        for (step, model), members in sorted(
            groups.items(), key=lambda g: (g[0][0], by_model_order(g[0][1]))
        ):
            values: dict[str, Value] = {
                "S": context.mean(
                    [f.weighted for f in members if f.weighted is not None],
                    "failure_modes",
                    step,
                    model,
                    "S",
                )
            }
            for tag in tags:
                values[tag] = context.mean(
                    [1.0 if tag in f.labels else 0.0 for f in members],
                    "failure_modes",
                    step,
                    model,
                    tag,
                ).scaled(100.0)
            rows.append(Row({"step": step, "model": model}, values, len(members)))
        return [
            Table(
                name="failure_modes",
                title="Failure modes",
                blurb="Mean judge S and the share of judged instructions with each failure "
                "mode the judge tagged, per judge step and model (latest verdict per "
                "instruction).",
                keys=[Column("step", "Judge step"), Column("model", "Model")],
                values=[
                    Column("S", "S", digits=3),
                    *(Column(t, _label(t), digits=1, suffix="%") for t in tags),
                ],
                rows=rows,
            )
        ]


__all__ = ["TAGS", "FailureModesSection", "tagged_verdicts"]
