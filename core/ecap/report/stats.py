"""The statistics of reports: bootstrap intervals and rank correlation, from numpy and scipy.

Intervals are percentile bootstraps. Each cell draws from its own generator, seeded from the
report's seed and the cell's key (:func:`generator`), so a cell's interval does not change when
other cells are added. Resampling ``n`` values is done by drawing how often each distinct value
is drawn (one multinomial draw per resample) when the values take few distinct levels, as judge
axes and grades do, and by drawing ``n`` indices otherwise: both are the same bootstrap; the first
costs a few levels per resample instead of ``n`` draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..interfaces import require

if TYPE_CHECKING:
    import numpy as np

#: Resampled values held in memory at once when drawing indices.
_BATCH_VALUES = 4_000_000


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
        def scale(v: float | None) -> float | None:
            return None if v is None else v * factor

        return Stat(scale(self.mean), scale(self.low), scale(self.high), self.n)


def _numpy() -> Any:
    return require("numpy", "report", "report")


def generator(seed: int, *key: object) -> np.random.Generator:
    """A generator for one cell: the same ``seed`` and ``key`` always draw the same numbers."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    entropy = [seed, int.from_bytes(digest[:16], "big")]
    numpy = _numpy()
    return numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence(entropy)))


def bootstrap_mean(
    values: Sequence[float],
    *,
    resamples: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> Stat:
    """The mean of ``values`` with a percentile bootstrap interval."""
    n = len(values)
    if n == 0:
        return Stat(None, None, None, 0)
    numpy = _numpy()
    data = numpy.asarray(values, dtype=float)
    mean = float(data.mean())
    if resamples <= 0:
        return Stat(mean, None, None, n)
    levels, counts = numpy.unique(data, return_counts=True)
    if len(levels) == 1:
        return Stat(mean, mean, mean, n)
    if len(levels) * 8 < n:
        drawn = rng.multinomial(n, counts / n, size=resamples)
        means = drawn @ levels / n
    else:
        rows = max(1, _BATCH_VALUES // n)
        means = numpy.concatenate(
            [
                data[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
                for start in range(0, resamples, rows)
            ]
        )
    tail = (1.0 - confidence) / 2
    low, high = numpy.quantile(means, [tail, 1.0 - tail])
    return Stat(mean, float(low), float(high), n)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties share their average rank). ``None`` when undefined:
    fewer than two pairs, or a side without variation."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    stats = require("scipy.stats", "report", "report")
    return float(stats.spearmanr(x, y).statistic)


__all__ = ["Stat", "bootstrap_mean", "generator", "spearman"]
