"""Tables that read well in an 80-column terminal.

- Ids are shortened to the part that tells the rows apart: a unique prefix of at most 12
  characters (``01M8S1051P…``), which commands accept as an id. ULIDs made in one batch share
  their first 20-odd characters (the same millisecond, then a counter), so for those a few leading
  characters and the unique tail are shown instead (``01M8S1…RR83``). ``--json`` prints ids in
  full.
- Cells never hold raw JSON: a mapping is written ``key=value``, a list comma-separated.
- Timestamps lose their microseconds; no cell wraps (long text ends in an ellipsis instead).
- An empty result is one line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: Columns that hold record, run or step ids (or cache keys).
ID_COLUMN = re.compile(r"^(id|run|step_key|.*_id)$")
MIN_PREFIX, MAX_PREFIX = 8, 12  # an id prefix shown: long enough to be unique, short to read
HEAD, MIN_TAIL = 6, 4  # otherwise: leading characters, then the fewest trailing ones shown
ELLIPSIS = "…"
MAX_WIDTH = 40  # the widest a column gets, in characters


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id shortened so that the ids given stay told apart: the shortest common-length prefix
    that does it (at least ``MIN_PREFIX`` characters, usable as an argument), or, when that would
    be longer than ``MAX_PREFIX``, ``HEAD`` leading characters, ``…`` and the shortest tail that
    is unique. A ``ecap1:`` cache-key scheme is left out."""
    bare = {i: i.removeprefix("ecap1:") for i in ids}
    distinct = set(bare.values())
    length = MIN_PREFIX
    while length < MAX_PREFIX and len({v[:length] for v in distinct}) < len(distinct):
        length += 1
    if len({v[:length] for v in distinct}) == len(distinct):
        return {i: v if len(v) <= length else v[:length] + ELLIPSIS for i, v in bare.items()}
    return {i: _head_and_tail(v, distinct) for i, v in bare.items()}


def _head_and_tail(value: str, distinct: set[str]) -> str:
    tail = MIN_TAIL
    while tail < len(value) - HEAD and any(
        other != value and other.endswith(value[-tail:]) for other in distinct
    ):
        tail += 1
    return value if HEAD + tail >= len(value) else value[:HEAD] + ELLIPSIS + value[-tail:]


def cell(value: Any) -> str:
    """One value as a table cell: no JSON, no microseconds."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        if "uri" in value:  # a stored image or file: its name says which
            return str(value["uri"]).rstrip("/").rsplit("/", 1)[-1]
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    text = str(value)
    if re.fullmatch(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?", text):
        return text[:19].replace("T", " ")
    return " ".join(text.split())


def print_table(
    console: Console,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
) -> None:
    """``rows`` as a table of ``columns``, or one line when there are none."""
    if not rows:
        console.print(f"{title}: none" if title else "nothing to show")
        return
    shortened = {
        column: short_ids([str(row[column]) for row in rows if row.get(column)])
        for column in columns
        if ID_COLUMN.match(column)
    }
    cells = [
        [
            shortened[column].get(str(row.get(column)), "")
            if column in shortened
            else cell(row.get(column))
            for column in columns
        ]
        for row in rows
    ]
    from rich.table import Table

    widths = _fit(console.width, columns, cells, fixed=set(shortened))
    table = Table(title=title)
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=width)
    for values in cells:
        table.add_row(*values)
    console.print(table)


def _fit(
    total: int, columns: Sequence[str], cells: Sequence[Sequence[str]], fixed: set[str]
) -> list[int]:
    """Column widths that fit ``total`` characters: id columns (``fixed``) keep their width; the
    others share what is left, each taking what it needs up to an equal share of what remains
    (narrow columns first, so that free text gets the rest)."""
    natural = [
        max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)
    ]
    room = (
        total
        - (3 * len(columns) + 1)
        - sum(natural[i] for i, column in enumerate(columns) if column in fixed)
    )
    widths = list(natural)
    flexible = sorted((natural[i], i) for i, c in enumerate(columns) if c not in fixed)
    for position, (need, i) in enumerate(flexible):
        share = max(room // (len(flexible) - position), 1)
        widths[i] = min(need, share, MAX_WIDTH)
        room -= widths[i]
    return widths


def samples(counts: dict[str, int]) -> str:
    """A step's sample counts in one cell: ``6/6 done (2 cached), 1 failed, 3 waiting``; a
    filter step's also say what its keep rule decided: ``6/6 done, 4 kept, 2 dropped``."""
    finished = counts.get("done", 0) + counts.get("cached", 0)
    text = f"{finished}/{counts.get('inputs', finished)} done"
    if counts.get("cached"):
        text += f" ({counts['cached']} cached)"
    if "kept" in counts:
        text += f", {counts['kept']} kept, {counts.get('dropped', 0)} dropped"
    if counts.get("failed"):
        text += f", {counts['failed']} failed"
    if counts.get("pending"):
        text += f", {counts['pending']} waiting"
    return text


def note(status: str, message: str | None) -> str:
    """A step's message: an error only when the step failed; otherwise what it is doing (waiting
    for annotators, for a batch job) is a note, not an error."""
    if not message:
        return ""
    return f"error: {message}" if status == "failed" else message


def took(started: datetime | None, finished: datetime | None) -> str:
    """How long something ran, ``1m05s`` style; empty while it has not finished."""
    if started is None or finished is None:
        return ""
    seconds = (finished - started).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"
