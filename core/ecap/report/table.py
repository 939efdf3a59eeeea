"""The one table model every report section returns and every formatter reads.

A :class:`Table` is tidy: each :class:`Row` has its key values (model, benchmark ...), its value
cells (a :class:`~ecap.report.stats.Stat`, a plain number, or nothing) and its ``n``. How it is
shown is declared, not programmed: ``pivot`` spreads one key's values into column groups (the
scores table has one group of columns per benchmark), and ``chart`` says how the HTML page draws
it. JSON and CSV always list the rows as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .query import UNKNOWN
from .stats import Stat

#: What a value cell may hold.
Value = Stat | float | None


def ordered(values: Iterable[str]) -> list[str]:
    """Distinct values, alphabetical regardless of case, :data:`~ecap.report.query.UNKNOWN` last."""
    return sorted(set(values), key=lambda v: (v == UNKNOWN, v.casefold(), v))


@dataclass(frozen=True)
class Column:
    """A column: ``key`` names it in JSON and CSV, ``label`` in headers. Numbers are shown with
    ``digits`` decimals and ``suffix`` (``%``)."""

    key: str
    label: str
    digits: int = 2
    suffix: str = ""


@dataclass(frozen=True)
class Row:
    keys: dict[str, str]
    values: dict[str, Value]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.keys,
            "n": self.n,
            **{k: v.to_dict() if isinstance(v, Stat) else v for k, v in self.values.items()},
        }


@dataclass(frozen=True)
class Chart:
    """How HTML draws a table. Bar charts with interval error bars: ``grouped`` puts one group
    of bars per row, one bar per value column; ``per_column`` draws one chart per value column,
    one group per row key (``pivot`` excluded) and one bar per pivot value. ``lines`` draws one
    chart per value column with the numbers of key column ``x`` on the x axis, one line per
    combination of the other keys (a loss curve). ``histogram`` draws one chart per combination
    of the keys other than ``x`` (the bin) and ``pivot``: each row's ``n`` as a bar, one bar per
    pivot value. ``ymax`` ``None`` fits the axis to the data."""

    kind: Literal["grouped", "per_column", "lines", "histogram"]
    ylabel: str
    ymax: float | None = None
    x: str | None = None


@dataclass
class Table:
    """One table of a report. ``name`` is its key in JSON and its ``table`` value in CSV."""

    name: str
    title: str
    blurb: str
    keys: list[Column]
    values: list[Column]
    rows: list[Row] = field(default_factory=list)
    pivot: str | None = None
    chart: Chart | None = None
    #: Key columns in the order Markdown and HTML show them (default: ``keys``' order).
    display: list[str] | None = None
    #: Whether Markdown, the terminal and HTML list the rows; a long series (a loss curve per
    #: logging step) is only drawn, and JSON and CSV list it all the same.
    listed: bool = True

    def shown_keys(self) -> list[Column]:
        if self.display is None:
            return list(self.keys)
        by_key = {c.key: c for c in self.keys}
        return [by_key[k] for k in self.display]

    def row(self, **keys: str) -> Row | None:
        """The row with these key values (the only one, or ``None``)."""
        found = [r for r in self.rows if all(r.keys.get(k) == v for k, v in keys.items())]
        if len(found) > 1:
            raise ValueError(f"{len(found)} rows of {self.name} match {keys}")
        return found[0] if found else None

    def distinct(self, key: str) -> list[str]:
        """The values of key column ``key``, each once: alphabetical, the unknown last."""
        return ordered(r.keys.get(key, "") for r in self.rows)

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]


@dataclass
class Report:
    """Every section's tables, the notes they left, and what the report was asked
    (``meta``: the selection, seed, resamples ... and what sections added, such as the judge)."""

    meta: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"no table {name!r} in this report; tables: {[t.name for t in self.tables]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.meta,
            **{t.name: t.to_list() for t in self.tables},
            "notes": self.notes,
        }


__all__ = ["Chart", "Column", "Report", "Row", "Table", "Value", "ordered"]
