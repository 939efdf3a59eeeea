"""The ``instruction_length`` section of ``ecap report``: how long the instructions of each model
are, as the ``instruction-length`` filter counted them, and how many it found vague.

A report section reads the store through :mod:`ecap.report`'s query API (here
:meth:`~ecap.report.ReportContext.scores`), never the store's tables, and returns
:class:`~ecap.report.Table` objects: ecap prints them in every format (Markdown, CSV, JSON, HTML,
terminal) like its own tables.
"""

from __future__ import annotations

from collections import defaultdict

from ecap.report import Chart, Column, ReportContext, ReportSection, Row, ScoreFact, Table

SCORER = "instruction-length"


class InstructionLengthSection(ReportSection):
    """Words per instruction and the share flagged vague, per model and benchmark."""

    order = 60  # after ecap's and the judges' tables

    def tables(self, context: ReportContext) -> list[Table]:
        groups: dict[tuple[str, str], list[ScoreFact]] = defaultdict(list)
        for score in context.scores(SCORER):
            groups[score.model, score.benchmark].append(score)
        rows = []
        for (model, benchmark), members in sorted(groups.items()):
            words = [float(s.values["words"]) for s in members if "words" in s.values]
            vague = [100.0 * float(s.values.get("vague", 0.0)) for s in members]
            rows.append(
                Row(
                    {"model": model, "benchmark": benchmark},
                    {
                        "words": context.mean(words, "length", model, benchmark, "words"),
                        "vague": context.mean(vague, "length", model, benchmark, "vague"),
                    },
                    len(members),
                )
            )
        return [
            Table(
                name="instruction_length",
                title="Instruction length",
                blurb="Words per instruction and the share of vague instructions, as the "
                "instruction-length filter counted them.",
                keys=[Column("model", "Model"), Column("benchmark", "Benchmark")],
                values=[Column("words", "Words", digits=1), Column("vague", "Vague", 1, "%")],
                rows=rows,
                chart=Chart("grouped", "words / %", 100),
            )
        ]
