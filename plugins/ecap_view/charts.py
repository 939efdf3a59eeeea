"""Training curves as inline SVG: no script, no image file, nothing fetched.

A curve is a metric (``loss``, ``rewards/accuracies`` ...) a train step logged through
``Store.save_metrics``; each step run is one line of the metric's plot.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, MARGIN = 560, 260, 44
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[tuple[float, float]]


def curves(metric_rows: Sequence[dict[str, Any]], labels: dict[str, str]) -> dict[str, list[Curve]]:
    """Metric name -> one curve per step run, from ``Store.metrics`` rows (numbers only)."""
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in metric_rows:
        for name, value in (row["values"] or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                points[name][row["step_run_id"]].append((float(row["step"]), float(value)))
    return {
        name: [Curve(labels.get(run, run), sorted(p)) for run, p in by_run.items()]
        for name, by_run in sorted(points.items())
    }


def line_plot(title: str, lines: Sequence[Curve]) -> str:
    """One metric's curves as an SVG element with axes, tick labels and a legend."""
    xs = [x for c in lines for x, _ in c.points]
    ys = [y for c in lines for _, y in c.points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def sx(x: float) -> float:
        return MARGIN + (x - x0) / (x1 - x0) * inner_w

    def sy(y: float) -> float:
        return HEIGHT - MARGIN - (y - y0) / (y1 - y0) * inner_h

    parts = [
        f'<svg class="curve" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" aria-label="{html.escape(title)}">',
        f'<text x="{MARGIN}" y="18" class="title">{html.escape(title)}</text>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" '
        f'y2="{HEIGHT - MARGIN}" class="axis"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" class="axis"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = y0 + fraction * (y1 - y0)
        x = x0 + fraction * (x1 - x0)
        parts.append(
            f'<text x="{MARGIN - 4}" y="{sy(y) + 4:.1f}" class="tick" text-anchor="end">'
            f"{y:.3g}</text>"
        )
        parts.append(
            f'<text x="{sx(x):.1f}" y="{HEIGHT - MARGIN + 16}" class="tick" '
            f'text-anchor="middle">{x:.4g}</text>'
        )
    for i, curve in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in curve.points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(  # points as dots too: a curve of one logged step is still seen
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
            for x, y in curve.points
        )
        parts.append(
            f'<text x="{WIDTH - MARGIN}" y="{MARGIN + 14 * i}" class="legend" '
            f'text-anchor="end" fill="{colour}">{html.escape(curve.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
