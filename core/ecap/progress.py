"""Progress bars for long steps (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self._bars = (
            RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            if enabled
            else None
        )

    def __enter__(self) -> Progress:
        if self._bars:
            self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bars:
            self._bars.stop()

    def add(self, description: str, total: int) -> Any:
        return self._bars.add_task(description, total=total) if self._bars else None

    def advance(self, task: TaskID | None, amount: int) -> None:
        if self._bars and task is not None:
            self._bars.advance(task, amount)

    def describe(self, task: TaskID | None, description: str) -> None:
        """Replace a bar's text: a training's latest step, loss and speed."""
        if self._bars and task is not None:
            self._bars.update(task, description=description)


#: Metrics shown on a training's bar when it reports them, in this order, with their short names.
SHOWN_METRICS = (
    ("loss", "loss"),
    ("rewards/margins", "margin"),
    ("rewards/accuracies", "acc"),
    ("eval_loss", "eval loss"),
)


def metrics_line(step: int, values: dict[str, float]) -> str:
    """``step 120 · loss 0.532 · 1,234 tok/s``: what a training reported last, for its bar."""
    parts = [f"step {step}"]
    parts += [f"{short} {values[name]:.4g}" for name, short in SHOWN_METRICS if name in values]
    if "tokens_per_second" in values:
        parts.append(f"{values['tokens_per_second']:,.0f} tok/s")
    return " · ".join(parts)
