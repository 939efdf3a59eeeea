"""Runner overhead benchmark: a step whose plugin does nothing, end to end, against raw SQLite.

Run from the repository root (CPU only, no network)::

    python benchmarks/runner_overhead.py                   # 100,000 samples
    python benchmarks/runner_overhead.py --samples 20000   # what fits a 2-core machine's minutes

What a user pays per sample for the runner itself (scheduling, records, cache keys, lineage, the
store's commits), with no model work to hide it. Steps:

1. ``--samples`` pairs of 8 px PNGs and their CSV are generated, and imported by ``ecap pipeline
   run`` with a spec holding only the ``csv`` source (not timed).
2. A copy of that store is taken for the raw side (SQLite's backup API), so both sides start from
   the same file.
3. Timed: ``ecap pipeline run`` of the same spec plus a caption step using ``fake``, the captioner
   of ``ecap.testing`` (one fixed instruction per pair, no sleep), at its default options, run in
   a fresh process through a small script that registers the fakes beside the installed plugins.
   The source step is served from the store, so what remains is the runner.
4. The rows the caption step wrote (``instructions``, ``edges`` and ``sample_results`` of its step
   run, read back and counted) are inserted with plain ``sqlite3`` ``executemany`` into the copy,
   with the store's pragmas, in as many transactions as the runner committed (counted from the
   store: each commit stamps its rows with one time), the ``t``-th holding the ``t``-th slice of
   every table: the least any program writing the same results durably would pay. For
   information, the same rows are also inserted one transaction per 16 samples (into another
   copy), the default ``batch_size`` a model step keeps.

Printed: both times, their ratio (goal from issue 17: at most 3x), and the caption step's own time
from its step run (the command's time minus start-up and the source step's cache check). The script
prints; it never fails on a timing.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from _e2e import Clock, Timing, describe_machine, run_ecap, write_pairs

import ecap
from ecap.spec import StepOptions

RESULT_TABLES = ("instructions", "edges", "sample_results")
MODEL_BATCH = StepOptions().batch_size  # samples a transaction for the informational raw figure
STORE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON")


@dataclass
class TableRows:
    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def step_rows(store: Path, step_run_id: str) -> list[TableRows]:
    """The rows one step run wrote, as the store wrote them (an edge's integer id left out:
    SQLite assigns it on either side)."""
    conn = sqlite3.connect(store)
    tables = []
    for name in RESULT_TABLES:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
        if name == "edges":
            columns.remove("id")
        quoted = ", ".join(f'"{c}"' for c in columns)
        rows = conn.execute(
            f"SELECT {quoted} FROM {name} WHERE step_run_id = ? ORDER BY rowid", (step_run_id,)
        ).fetchall()
        tables.append(TableRows(name, columns, rows))
    conn.close()
    return tables


def step_runs(store: Path) -> dict[str, tuple[str, float]]:
    """Per step id of the latest run: (its step run id, its seconds from start to finish)."""
    conn = sqlite3.connect(store)
    found = conn.execute(
        "SELECT step_id, id, started_at, finished_at FROM step_runs WHERE run_id = "
        "(SELECT run_id FROM step_runs ORDER BY started_at DESC LIMIT 1)"
    ).fetchall()
    conn.close()
    return {
        step: (
            run_id,
            (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(),
        )
        for step, run_id, start, end in found
    }


def commits(store: Path, step_run_id: str) -> int:
    """How many transactions committed the step run's samples: ``Store.save_batch`` stamps every
    row of one commit with the same ``created_at``."""
    conn = sqlite3.connect(store)
    (count,) = conn.execute(
        "SELECT count(DISTINCT created_at) FROM sample_results WHERE step_run_id = ?",
        (step_run_id,),
    ).fetchone()
    conn.close()
    return int(count)


def raw_insert(path: Path, tables: list[TableRows], transactions: int) -> Timing:
    """Insert ``tables`` with executemany in ``transactions`` transactions (the ``t``-th holds the
    ``t``-th slice of every table, as one commit of the runner holds its batch's share of each)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in STORE_PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    plans = []
    for t in tables:
        quoted = ", ".join(f'"{c}"' for c in t.columns)
        marks = ", ".join("?" * len(t.columns))
        per = math.ceil(len(t.rows) / transactions)
        plans.append((f"INSERT INTO {t.name} ({quoted}) VALUES ({marks})", t.rows, per))
    clock = Clock()
    for n in range(transactions):
        conn.execute("BEGIN")
        for sql, rows, per in plans:
            if chunk := rows[n * per : (n + 1) * per]:
                conn.executemany(sql, chunk)
        conn.execute("COMMIT")
    elapsed = clock.stop()
    conn.close()
    return elapsed


def copy_store(source: Path, destination: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(destination) as dst:
        src.backup(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100_000, help="pairs (100,000)")
    args = parser.parse_args()

    print(f"ecap {ecap.__version__}, {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="ecap-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        clock = Clock()
        pairs_csv = write_pairs(tmp, args.samples, 8)
        source = f"pairs: {{source: csv, with: {{path: {pairs_csv}}}}}"
        import_spec, caption_spec = tmp / "import.yaml", tmp / "caption.yaml"
        import_spec.write_text(f"steps:\n  {source}\n")
        caption_spec.write_text(f"steps:\n  {source}\n  captions: {{caption: fake, from: pairs}}\n")
        store, raw_store, raw_small = tmp / "ecap.db", tmp / "raw.db", tmp / "raw-small.db"
        run_ecap(["pipeline", "run", str(import_spec), "--store", str(store), "--no-progress"])
        copy_store(store, raw_store)
        copy_store(store, raw_small)
        print(
            f"{args.samples:,} pairs of 8 px PNGs generated and imported "
            f"(not timed): {clock.stop().wall:.1f} s\n"
        )

        ecap_t = run_ecap(
            ["pipeline", "run", str(caption_spec), "--store", str(store), "--no-progress"],
            with_fakes=tmp,
            plugins=["csv"],
        )
        steps = step_runs(store)
        caption_run_id, caption_s = steps["captions"]
        tables = step_rows(store, caption_run_id)
        counts = ", ".join(f"{t.name} {len(t.rows):,}" for t in tables)
        transactions = commits(store, caption_run_id)
        raw_t = raw_insert(raw_store, tables, transactions)
        raw_small_t = raw_insert(raw_small, tables, math.ceil(args.samples / MODEL_BATCH))

    print(f"rows the caption step wrote, counted from its tables: {counts}")
    print(
        f"transactions: {transactions:,} on both sides (the runner's commits, counted; "
        f"{args.samples / transactions:,.0f} samples each on average)\n"
    )
    print(f"{'':62s} {'wall':>9s} {'per sample':>11s} {'CPU':>9s}")
    for label, t in (
        ("ecap pipeline run, caption: fake (whole command)", ecap_t),
        ("raw sqlite3 executemany of the same rows", raw_t),
    ):
        per_sample = t.wall / args.samples * 1e6
        print(f"{label:62s} {t.wall:7.2f} s {per_sample:8.0f} us {t.cpu:7.2f} s")
    print(
        f"{'  of which the caption step (its step run start to finish)':62s} {caption_s:7.2f} s "
        f"{caption_s / args.samples * 1e6:8.0f} us"
    )
    print(f"{'  of which the source step, served from the store':62s} {steps['pairs'][1]:7.2f} s")
    info = f"information: raw, {MODEL_BATCH} samples a transaction"
    print(
        f"{info:62s} {raw_small_t.wall:7.2f} s "
        f"{raw_small_t.wall / args.samples * 1e6:8.0f} us {raw_small_t.cpu:7.2f} s"
    )
    ratio = ecap_t.wall / raw_t.wall
    print(
        f"\nRATIO ecap / raw: {ratio:.1f}x wall (whole command), "
        f"{caption_s / raw_t.wall:.1f}x (caption step alone); goal <= 3x: "
        f"{'met' if ratio <= 3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
