"""The training section of ``ecap report``: how each train step's training went.

A trainer reports numbers per logging step through ``context.log_metrics``; the store keeps them
with the step run (this plugin's trainers hand over what TRL logs, plus ``tokens_per_second``).
Two tables come from them, one row (or curve) per train step run that logged anything; a cached
train step logged nothing and has no row:

- **Training**: final and lowest loss, the last logging step, mean tokens per second, and for DPO
  the final reward margin (chosen minus rejected) and reward accuracy;
- **Training curves** (drawn, not listed): loss and, for DPO, the reward margin per logging
  step, as line charts in the HTML page; JSON and CSV carry every point.

The names read are TRL's (``loss``, ``rewards/margins``, ``rewards/accuracies``), so any trainer
that logs under them is reported alike. With ``--run`` only train steps of those runs are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ecap.report import Chart, Column, ReportContext, ReportOptions, ReportSection, Row, Table
from ecap.report.query import MetricFact, StepRunFact, metrics, step_runs
from ecap.report.table import Value

LOSS = "loss"
MARGIN = "rewards/margins"
ACCURACY = "rewards/accuracies"
TOKENS_PER_SECOND = "tokens_per_second"


def _series(rows: Sequence[MetricFact], name: str) -> list[float]:
    return [row.values[name] for row in rows if name in row.values]


def _last(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class TrainingSection(ReportSection):
    order = 60

    def tables(self, context: ReportContext) -> list[Table]:
        trained = self._trained(context)
        if not trained:
            return []  # no training logged: no empty tables, whose keys would widen the CSV
        keys = [Column("step", "Step"), Column("plugin", "Trainer"), Column("run", "Run")]
        return [
            Table(
                name="training",
                title="Training",
                blurb="Per train step run: final and lowest loss, last logging step, mean "
                "tokens/s, and for DPO the final reward margin (chosen - rejected) and reward "
                "accuracy; n = logging steps.",
                keys=keys,
                values=[
                    Column("final_loss", "Final loss", digits=4),
                    Column("min_loss", "Min loss", digits=4),
                    Column("steps", "Steps", digits=0),
                    Column("tokens_per_second", "Tokens/s", digits=0),
                    Column("margin", "DPO margin", digits=4),
                    Column("accuracy", "DPO accuracy", digits=1, suffix="%"),
                ],
                rows=[self._summary(step_run, rows) for step_run, rows in trained],
            ),
            Table(
                name="training_curves",
                title="Training curves",
                blurb="Loss and, for DPO, reward margin per logging step.",
                keys=[*keys, Column("log_step", "Logging step")],
                values=[Column("loss", "Loss", digits=4), Column("margin", "DPO margin", digits=4)],
                rows=[row for step_run, rows in trained for row in self._curve(step_run, rows)],
                chart=Chart("lines", "value", x="log_step"),
                listed=False,
            ),
        ]

    @staticmethod
    def _trained(context: ReportContext) -> list[tuple[StepRunFact, list[MetricFact]]]:
        """Every train step run in the selection with the metrics it logged, by step then age."""
        runs = ReportOptions.ids(context.options.runs)
        found = step_runs(context.store, kind="train", runs=runs)
        logged: dict[str, list[MetricFact]] = defaultdict(list)
        for row in metrics(context.store, [s.step_run_id for s in found]):
            logged[row.step_run_id].append(row)
        trained = [(s, logged[s.step_run_id]) for s in found if logged[s.step_run_id]]
        return sorted(trained, key=lambda sr: (sr[0].step_id, sr[0].step_run_id))

    @staticmethod
    def _keys(step_run: StepRunFact) -> dict[str, str]:
        return {"step": step_run.step_id, "plugin": step_run.plugin, "run": step_run.run_id}

    def _summary(self, step_run: StepRunFact, rows: Sequence[MetricFact]) -> Row:
        losses = _series(rows, LOSS)
        accuracy = _last(_series(rows, ACCURACY))
        values: dict[str, Value] = {
            "final_loss": _last(losses),
            "min_loss": min(losses) if losses else None,
            "steps": float(max(row.step for row in rows)),
            "tokens_per_second": _mean(_series(rows, TOKENS_PER_SECOND)),
            "margin": _last(_series(rows, MARGIN)),
            "accuracy": 100.0 * accuracy if accuracy is not None else None,
        }
        return Row(self._keys(step_run), values, len(rows))

    def _curve(self, step_run: StepRunFact, rows: Sequence[MetricFact]) -> list[Row]:
        return [
            Row(
                {**self._keys(step_run), "log_step": str(row.step)},
                {"loss": row.values.get(LOSS), "margin": row.values.get(MARGIN)},
                1,
            )
            for row in rows
            if LOSS in row.values or MARGIN in row.values
        ]


__all__ = ["TrainingSection"]
