"""Reading benchmark rows from local files: Parquet (one file, or a folder of shards, as the
Hugging Face hub stores datasets) and JSON Lines, and the image cells they hold.

Listing rows reads only Parquet metadata, never the images, so ``rows()`` stays cheap on a
131 GB dataset; a row's data is read when it is loaded, one row group at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecap.errors import EcapError
from ecap.hashing import digest

PARQUET = (".parquet",)
JSONL = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class RowRef:
    """Where one row lives: a file and its row number (0-based; JSONL: its line number)."""

    file: str
    row: int


class DataFiles:
    """The data files under ``path``, and their rows."""

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in PARQUET + JSONL)
        elif path.exists():
            files = [path]
        else:
            raise EcapError(f"benchmark data not found: {path}")
        if not files:
            raise EcapError(f"no .parquet or .jsonl files under {path}")
        self.root = path if path.is_dir() else path.parent
        self.files = files
        self._group: tuple[str, int, list[dict[str, Any]]] | None = None

    def rows(self) -> Iterator[tuple[str, RowRef]]:
        """(stable key, row) for every row. A Parquet row's key is its file's name, size and
        modification time and its number; a JSONL row's is its content, so edits re-import it."""
        for file in self.files:
            name = str(file.relative_to(self.root)) if file != self.root else file.name
            if file.suffix.lower() in PARQUET:
                import pyarrow.parquet as pq

                stat = file.stat()
                for row in range(pq.ParquetFile(file).metadata.num_rows):
                    key = digest("bench-parquet", name, stat.st_size, stat.st_mtime_ns, row)
                    yield key, RowRef(str(file), row)
            else:
                with file.open(encoding="utf-8-sig") as lines:
                    for number, line in enumerate(lines, start=1):
                        if line.strip():
                            yield digest("bench-jsonl", name, line), RowRef(str(file), number)

    def read(self, ref: RowRef) -> dict[str, Any]:
        """The row's columns. Raises ``ValueError`` for a JSONL line that is not an object."""
        path = Path(ref.file)
        if path.suffix.lower() in PARQUET:
            return self._parquet_row(path, ref.row)
        with path.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if number == ref.row:
                    data = json.loads(line)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    return data
        raise ValueError(f"line {ref.row} is gone")

    def _parquet_row(self, path: Path, row: int) -> dict[str, Any]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if row < start + size:
                if self._group is None or self._group[:2] != (str(path), group):
                    self._group = (str(path), group, parquet.read_row_group(group).to_pylist())
                return self._group[2][row - start]
            start += size
        raise ValueError(f"row {row} is past the end of {path.name}")


def image_cell(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) of an image cell: the hub's ``{"bytes": ..., "path": ...}`` struct (bytes
    win when both are set), raw bytes, or a path string."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return bytes(data), None
        path = value.get("path")
        return None, str(path) if path else None
    if isinstance(value, bytes | bytearray):
        return bytes(value), None
    if isinstance(value, str) and value:
        return None, value
    return None, None
