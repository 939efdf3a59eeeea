"""The raw baseline of ``core_ingest.py``: importing pairs with no framework, as a ~30-line script
a user might write instead (read both files, decode-check with Pillow, sha256, ``sqlite3``
``executemany`` in batches of 1,000, WAL and synchronous=NORMAL like the store).

Run as its own process (``python _raw_ingest.py PAIRS_CSV DB``), as ecap is, so that both sides
of the comparison pay for starting an interpreter and importing what they use.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from PIL import Image

BATCH = 1_000  # rows per executemany and commit


def image(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()  # a full decode: a truncated or corrupt file fails here
        width, height, kind = decoded.width, decoded.height, decoded.format
    digest = hashlib.sha256(data).hexdigest()
    return {"uri": str(path), "sha256": digest, "width": width, "height": height, "format": kind}


def ingest(pairs_csv: Path, db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE pairs (id TEXT PRIMARY KEY, source TEXT, target TEXT, category TEXT)"
    )

    def insert(rows: list[tuple[str, str, str, str]]) -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")

    rows = []
    with pairs_csv.open(newline="") as lines:
        for row in csv.DictReader(lines):
            source, target = (image(pairs_csv.parent / row[side]) for side in ("source", "target"))
            pair_id = hashlib.sha256(f"{source['sha256']}:{target['sha256']}".encode()).hexdigest()
            rows.append((pair_id, json.dumps(source), json.dumps(target), row["category"]))
            if len(rows) == BATCH:
                insert(rows)
                rows = []
    if rows:
        insert(rows)
    conn.close()


if __name__ == "__main__":
    ingest(Path(sys.argv[1]), Path(sys.argv[2]))
