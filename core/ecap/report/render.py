"""Formatters: a :class:`~ecap.report.Report` as Markdown, CSV, JSON, a terminal table, or a
self-contained HTML page with bar charts (inline CSS and PNG; no script, no link, nothing
fetched). They read tables only, so a plugin's section is shown like ecap's own.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..interfaces import require
from .stats import Stat
from .table import Chart, Column, Report, Row, Table, Value

NOTHING = "No judge or human verdicts match this selection."


def summary(report: Report) -> str:
    """The line under the title: whose verdicts, and what the brackets are."""
    judge = report.meta.get("judge")
    who = f"judge `{judge}`" if judge else "no judge verdicts"
    resamples = report.meta.get("resamples", 0)
    ci = (
        f"{report.meta.get('confidence', 0.95):.0%} bootstrap intervals in brackets "
        f"({resamples} resamples, seed {report.meta.get('seed', 0)})"
        if resamples > 0
        else "no intervals (0 resamples)"
    )
    return f"{who}; {ci}; n = samples in each cell."


def cell_text(value: Value, column: Column, *, interval: Callable[[str], str] | None = None) -> str:
    """A value as text: a mean with its interval (``interval`` wraps the bracket), a number, or
    ``-`` for nothing."""
    if isinstance(value, Stat):
        if value.mean is None:
            return "-"
        text = f"{value.mean:.{column.digits}f}{column.suffix}"
        if value.low is not None and value.high is not None:
            bracket = f"[{value.low:.{column.digits}f}, {value.high:.{column.digits}f}]"
            text += " " + (interval(bracket) if interval else bracket)
        return text
    return "-" if value is None else f"{value:.{column.digits}f}{column.suffix}"


def grid(
    table: Table, cell: Callable[[Value, Column], str] = cell_text
) -> tuple[list[str], list[list[str]]]:
    """A table as a header and rows of text, with its pivot key spread into column groups."""
    keys = [c for c in table.shown_keys() if c.key != table.pivot]
    if table.pivot is None:
        header = [*(c.label for c in keys), *(c.label for c in table.values), "n"]
        rows = [
            [
                *(r.keys.get(c.key, "") for c in keys),
                *(cell(r.values.get(c.key), c) for c in table.values),
                str(r.n),
            ]
            for r in table.rows
        ]
        return header, rows
    groups = table.distinct(table.pivot)
    header = [c.label for c in keys]
    for group in groups:
        header.extend(f"{group} {c.label}" for c in table.values)
        header.append(f"{group} n")
    rows = []
    for line_keys in _lines(table, keys):
        line = list(line_keys.values())
        for group in groups:
            found = table.row(**line_keys, **{table.pivot: group})
            line.extend(cell(found.values.get(c.key) if found else None, c) for c in table.values)
            line.append(str(found.n) if found else "0")
        rows.append(line)
    return header, rows


def _lines(table: Table, keys: Sequence[Column]) -> list[dict[str, str]]:
    """The distinct values of ``keys`` over the rows, in row order."""
    seen = dict.fromkeys(tuple(r.keys.get(c.key, "") for c in keys) for r in table.rows)
    return [dict(zip((c.key for c in keys), values, strict=True)) for values in seen]


# -- Markdown, CSV, JSON, terminal -------------------------------------------------------------


def render_markdown(report: Report) -> str:
    out = ["# ecap report", "", summary(report), ""]
    for table in report.tables:
        if not table.rows or not table.listed:
            continue
        header, rows = grid(table)
        out.extend([f"## {table.title}", "", table.blurb, "", *_md_table(header, rows), ""])
    if not any(t.rows for t in report.tables):
        out.extend([NOTHING, ""])
    if report.notes:
        out.extend(["## Notes", "", *(f"- {n}" for n in report.notes), ""])
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]


def render_csv(report: Report) -> str:
    """One tidy line per table row and value column. The key columns are every table's, those
    of the table with the most first."""
    keys: list[str] = []
    for table in sorted(report.tables, key=lambda t: -len(t.keys)):
        keys.extend(c.key for c in table.keys if c.key not in keys)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", *keys, "metric", "mean", "ci_low", "ci_high", "n"])
    for table in report.tables:
        for row in table.rows:
            for column in table.values:
                value = row.values.get(column.key)
                if isinstance(value, Stat):
                    numbers, n = (value.mean, value.low, value.high), value.n
                else:
                    numbers, n = (value, None, None), row.n
                writer.writerow(
                    [
                        table.name,
                        *(row.keys.get(k, "") for k in keys),
                        column.key,
                        *map(_number, numbers),
                        n,
                    ]
                )
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


def render_terminal(report: Report) -> str:
    """Boxed tables for reading in a terminal (rich), notes last."""
    from rich.console import Console
    from rich.table import Table as RichTable

    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    console.print(summary(report).replace("`", ""))
    for table in report.tables:
        if not table.rows or not table.listed:
            continue
        header, rows = grid(table)
        shown = RichTable(title=table.title, caption=table.blurb)
        keys = len([c for c in table.shown_keys() if c.key != table.pivot])
        for i, label in enumerate(header):
            shown.add_column(label, justify="left" if i < keys else "right")
        for line in rows:
            shown.add_row(*line)
        console.print(shown)
    if not any(t.rows for t in report.tables):
        console.print(NOTHING)
    for note in report.notes:
        console.print(f"note: {note}")
    return buffer.getvalue()


# -- HTML with charts --------------------------------------------------------------------------

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


def _html_cell(value: Value, column: Column) -> str:
    return cell_text(value, column, interval=lambda text: f'<span class="ci">{text}</span>')


def html_table(table: Table) -> str:
    header, rows = grid(table, _html_cell)
    keys = len([c for c in table.shown_keys() if c.key != table.pivot])

    def th(label: str, key: bool, span: str = "") -> str:
        kind = ' class="key"' if key else ""
        return f"<th{kind}{span}>{html.escape(label)}</th>"

    if table.pivot is None:
        head = "<tr>" + "".join(th(h, i < keys) for i, h in enumerate(header)) + "</tr>"
    else:
        width = len(table.values) + 1
        head = (
            "<tr>"
            + "".join(th(h, True, ' rowspan="2"') for h in header[:keys])
            + "".join(th(g, False, f' colspan="{width}"') for g in table.distinct(table.pivot))
            + "</tr><tr>"
            + "".join(
                th(c.label, False) + th("n", False)
                if i == len(table.values) - 1
                else th(c.label, False)
                for _ in table.distinct(table.pivot)
                for i, c in enumerate(table.values)
            )
            + "</tr>"
        )
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="key">{html.escape(v)}</td>' if i < keys else f"<td>{v}</td>"
            for i, v in enumerate(line)
        )
        + "</tr>"
        for line in rows
    )
    return f"<table>{head}\n{body}</table>"


def render_html(report: Report) -> str:
    """A self-contained page: inline CSS, tables, and the tables' charts as inline PNG."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ecap report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>ecap report</h1>",
        f'<p class="meta">{html.escape(summary(report).replace("`", ""))}</p>',
    ]
    for table in report.tables:
        if not table.rows:
            continue
        title = html.escape(table.title)
        parts.extend([f"<h2>{title}</h2>", f"<p>{html.escape(table.blurb)}</p>"])
        if table.listed:
            parts.append(html_table(table))
        if table.chart is not None:
            png = chart_png(table, table.chart)
            parts.append(
                f'<img src="data:image/png;base64,{png}" class="chart" alt="{title} chart">'
            )
    if not any(t.rows for t in report.tables):
        parts.append(f"<p>{NOTHING}</p>")
    if report.notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts.extend(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def chart_png(table: Table, chart: Chart) -> str:
    """The table's charts as base64 PNG (matplotlib, the ``report`` extra)."""
    require("matplotlib", "report", "report")
    figures = require("matplotlib.figure", "report", "report")
    keys = [c for c in table.keys if c.key != table.pivot]
    if chart.kind == "lines":
        figure = _line_panels(figures, table, chart)
    elif chart.kind == "histogram":
        figure = _histogram_panels(figures, table, chart)
    elif chart.kind == "per_column":
        lines = _lines(table, keys)
        groups = [" · ".join(line.values()) for line in lines]
        cols = 2 if len(table.values) > 1 else 1
        rows = math.ceil(len(table.values) / cols)
        figure = _figure(figures, len(groups) * cols, rows)
        axes = figure.subplots(rows, cols, squeeze=False)
        pivots = table.distinct(table.pivot) if table.pivot else [""]
        for ax, column in zip((a for line in axes for a in line), table.values, strict=False):
            series = []
            for pivot in pivots:
                where = {table.pivot: pivot} if table.pivot else {}
                found = [table.row(**line, **where) for line in lines]
                series.append((pivot, [r.values.get(column.key) if r else None for r in found]))
            _bars(ax, groups, series, column.label, chart.ymax)
    else:
        varying = [c for c in table.keys if len(table.distinct(c.key)) > 1] or table.keys
        groups = [" · ".join(r.keys.get(c.key, "") for c in varying) for r in table.rows]
        figure = _figure(figures, len(groups), 1)
        series = [(c.label, [r.values.get(c.key) for r in table.rows]) for c in table.values]
        _bars(figure.subplots(), groups, series, chart.ylabel, chart.ymax)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(figures: Any, groups: int, rows: int) -> Any:
    width = min(max(6.0, 1.2 * groups), 18.0)
    return figures.Figure(figsize=(width, 4.0 * rows), layout="constrained")


def _panels(figures: Any, count: int) -> tuple[Any, list[Any]]:
    """A figure of ``count`` charts, two a row, and its axes in order."""
    cols = 2 if count > 1 else 1
    rows = max(1, math.ceil(count / cols))
    figure = figures.Figure(figsize=(6.0 * cols, 4.0 * rows), layout="constrained")
    axes = [a for line in figure.subplots(rows, cols, squeeze=False) for a in line]
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def _number_or_none(value: Value) -> float | None:
    return value.mean if isinstance(value, Stat) else value


def _line_panels(figures: Any, table: Table, chart: Chart) -> Any:
    """One chart per value column that has numbers: key ``chart.x`` on the x axis, one line per
    combination of the other keys."""
    assert chart.x is not None, "a line chart names its x key"
    others = [c for c in table.keys if c.key != chart.x]
    drawn = [c for c in table.values if any(r.values.get(c.key) is not None for r in table.rows)]
    figure, axes = _panels(figures, len(drawn))
    for ax, column in zip(axes, drawn, strict=True):
        for line in _lines(table, others):
            points = [
                (float(r.keys[chart.x]), y)
                for r in table.rows
                if all(r.keys.get(k) == v for k, v in line.items())
                and (y := _number_or_none(r.values.get(column.key))) is not None
            ]
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                ax.plot(xs, ys, marker="." if len(xs) < 50 else "", label=" · ".join(line.values()))
        ax.set_title(column.label)
        ax.set_xlabel(next(c.label for c in table.keys if c.key == chart.x))
        ax.set_ylabel(chart.ylabel)
        if chart.ymax is not None:
            ax.set_ylim(top=chart.ymax)
        ax.grid(alpha=0.3)
        if len(_lines(table, others)) > 1:
            ax.legend(fontsize="small")
    return figure


def _histogram_panels(figures: Any, table: Table, chart: Chart) -> Any:
    """One chart per combination of the keys other than the bin (``chart.x``) and the pivot:
    each row's ``n`` as a bar over its bin, one bar per pivot value."""
    assert chart.x is not None, "a histogram names its bin key"
    others = [c for c in table.keys if c.key not in (chart.x, table.pivot)]
    panels = _lines(table, others)
    figure, axes = _panels(figures, len(panels))
    pivots = table.distinct(table.pivot) if table.pivot else [""]
    for ax, panel in zip(axes, panels, strict=True):
        rows = [r for r in table.rows if all(r.keys.get(k) == v for k, v in panel.items())]
        bins = list(dict.fromkeys(r.keys[chart.x] for r in rows))
        series: list[tuple[str, list[Value]]] = []
        for pivot in pivots:
            counts: list[Value] = [
                float(sum(r.n for r in rows if r.keys[chart.x] == b and _in(r, table, pivot)))
                for b in bins
            ]
            series.append((pivot, counts))
        _bars(ax, bins, series, chart.ylabel, chart.ymax)
        ax.set_title(" · ".join(panel.values()))
    return figure


def _in(row: Row, table: Table, pivot: str) -> bool:
    return table.pivot is None or row.keys.get(table.pivot) == pivot


def _bars(
    ax: Any,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Value]]],
    ylabel: str,
    ymax: float | None,
) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series, interval error bars."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series):
        stats = [v if isinstance(v, Stat) else Stat(v, None, None, 0) for v in values]
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [s.mean if s.mean is not None else math.nan for s in stats]
        pairs = list(zip(heights, stats, strict=True))
        below = [h - s.low if s.low is not None else 0.0 for h, s in pairs]
        above = [s.high - h if s.high is not None else 0.0 for h, s in pairs]
        ax.bar(xs, heights, width, label=name, yerr=[below, above], capsize=3)
    crowded = len(groups) > 3
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, ymax)  # ``None``: fitted to the bars
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")


RENDERERS: dict[str, Callable[[Report], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "html": render_html,
    "terminal": render_terminal,
}

__all__ = [
    "RENDERERS",
    "cell_text",
    "grid",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "render_terminal",
    "summary",
]
