"""Core store benchmark: ecap's write path against raw SQLite, and the speed of a lineage walk.

Run from the repository root (SQLite only; nothing here needs a GPU or the network)::

    python benchmarks/core_ingest.py            # full run: 150,000 pairs, >= 1,000,000 rows
    python benchmarks/core_ingest.py --quick    # smoke run in seconds: 5,000 pairs, 50,000 rows

It prints measured numbers and ratios; it never asserts a timing threshold (the targets below are
printed next to the figures, for a reader to judge on their own machine).

1. Ingest (target from the issue: ecap within 2x of a raw insert).
   ``--pairs`` pre-hashed pairs (``Pair.of`` over ``ImageRef``s whose sha256 are made-up hex: no
   image is read or hashed, so what is measured is the store, not image I/O) are committed through
   the store's real write path, exactly as the runner commits a ``source`` step: per batch, the
   bookkeeping of ``runner._StepExecution._commit`` (new records by id, one ``Finished`` per
   input with the item's refs as outputs) and one ``Store.save_batch`` call, into a fresh SQLite
   file with a run and step run started first. Then, in the same process, the very rows that
   the store wrote (read back from its ``pairs``, ``sample_results`` and ``edges`` tables, and
   counted) are inserted with plain ``sqlite3`` ``executemany`` into a fresh file with the same
   tables and indexes (DDL copied from the store) and the same pragmas (``_sqlite_pragmas``: WAL,
   synchronous=NORMAL), one transaction per batch of the same size. The raw side thus gets rows
   already serialised (JSON as text, timestamps as text): the ratio is everything ecap adds on
   top of SQLite (pydantic dumps, JSON encoding, SQLAlchemy statement handling). A second raw
   figure inserts the pair rows alone, the floor any importer of the same pairs would pay.

2. Provenance (target: median walk under 10 ms).
   A store of at least ``--provenance-rows`` rows is built with bulk ``sqlite3`` inserts into the
   store's own tables (created by ``Store``, i.e. by the Alembic migrations, with runs and step runs
   started through the ``Store`` API). Its shape follows the paper's pipeline: per pair, a model
   instruction (edge ``instruction wasDerivedFrom pair``), an EditScore-style score (edge ``score
   used instruction``), and ``sample_results`` for the source, caption and filter steps; kept
   scores (70 %) are used by one SFT dataset (edge ``dataset used score``, as the runner's export
   writes ``item.leaf()``), and a model used that dataset. ``ecap.provenance.walk`` is then timed
   for random kept pairs, which walks forward pair -> instruction -> score -> dataset -> model, and
   the median and p95 are printed. ``ecap provenance show ID --json`` is timed once in a subprocess
   for information only: Python start-up and imports dominate it, so ``ecap --help`` is timed too.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy

import ecap
from ecap import provenance
from ecap.hashing import digest
from ecap.records import ImageRef, Item, Pair, Record, new_id
from ecap.spec import StepOptions
from ecap.store import Store
from ecap.store.store import Finished

INGEST_TABLES = ("pairs", "sample_results", "edges")
KEEP_SHARE = 0.7  # share of scored instructions the filter keeps, used by the dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=150_000, help="pairs to ingest (150,000)")
    parser.add_argument(
        "--provenance-rows",
        type=int,
        default=1_000_000,
        help="minimum rows in the provenance store, all tables together (1,000,000)",
    )
    parser.add_argument("--batch-size", type=int, default=1_000, help="rows per commit (1,000)")
    parser.add_argument("--walks", type=int, default=200, help="random pairs to walk (200)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 pairs, 50,000 rows")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.provenance_rows = 5_000, 50_000

    print(
        f"ecap {ecap.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    with tempfile.TemporaryDirectory(prefix="ecap-bench-") as tmp:
        print(f"work dir (removed at exit): {tmp}\n")
        ingest_benchmark(Path(tmp), args.pairs, args.batch_size)
        print()
        provenance_benchmark(Path(tmp), args.provenance_rows, args.walks, args.seed)


# -- 1. ingest ---------------------------------------------------------------------------------


@dataclass
class _Input:
    """What the runner holds for one input of a source step: its key, cache key and item."""

    key: str
    cache_key: str
    item: Item


def fake_sha256(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def prehashed_inputs(n: int, step_key: str) -> list[_Input]:
    """``n`` source-step inputs whose pairs are already hashed (as a CSV source's ``load`` returns
    them, minus reading the images), keyed like the runner keys them."""
    out = []
    for i in range(n):
        source = ImageRef(
            uri=f"/data/pairs/{i:07d}_source.jpg",
            sha256=fake_sha256("source", i),
            width=1024,
            height=768,
            format="JPEG",
        )
        target = ImageRef(
            uri=f"/data/pairs/{i:07d}_target.jpg",
            sha256=fake_sha256("target", i),
            width=1024,
            height=768,
            format="JPEG",
        )
        pair = Pair.of(
            source,
            target,
            category=("add", "remove", "replace", "style", "background")[i % 5],
            meta={"source_file": "/data/pairs.csv", "row": i + 2},
        )
        key = digest("csv-row", {"source": source.uri, "target": target.uri}, i)
        out.append(_Input(key, digest(step_key, key), Item(pair=pair)))
    return out


@dataclass
class Timing:
    """Wall-clock and CPU seconds (this process's user + system time) of one measured phase."""

    wall: float
    cpu: float


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def ecap_ingest(
    path: Path, inputs: Sequence[_Input], step_key: str, batch: int
) -> tuple[Timing, float]:
    """Commit ``inputs`` through ``Store.save_batch`` as the runner's ``_commit`` does for a source
    step. Returns (the whole loop's timing, wall seconds inside save_batch)."""
    store = Store(f"sqlite:///{path}")
    run_id = store.start_run(
        name="core-ingest-benchmark",
        spec_path="benchmarks/core_ingest.py",
        spec_text="",
        spec_hash=digest("benchmark"),
        ecap_version=ecap.__version__,
        plugins={"source:prehashed": "benchmarks"},
    )
    step_run_id = store.start_step(
        run_id=run_id,
        step_id="pairs",
        kind="source",
        plugin="prehashed",
        plugin_version=ecap.__version__,
        package="benchmarks",
        config={"rows": len(inputs)},
        step_key=step_key,
    )
    in_save = 0.0
    clock = _Clock()
    for start in range(0, len(inputs), batch):
        # -- runner._StepExecution._commit, for a source step whose every row succeeded --
        finished: list[Finished] = []
        new_records: dict[str, Record] = {}
        for inp in inputs[start : start + batch]:
            outcome = [inp.item]
            known: set[str] = set()  # a source's payload is a SourceRow: nothing known yet
            for item in outcome:
                new_records.update((r.id, r) for r in item.records() if r.id not in known)
            finished.append(Finished(inp.cache_key, inp.key, [i.refs() for i in outcome]))
        before = time.perf_counter()
        store.save_batch(step_run_id, step_key, "pairs", finished, [], new_records.values())
        in_save += time.perf_counter() - before
    elapsed = clock.stop()
    store.finish_step(step_run_id, "complete", {"done": len(inputs)})
    store.finish_run(run_id, "complete")
    store.close()
    return elapsed, in_save


@dataclass
class _TableRows:
    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def written_rows(path: Path) -> tuple[list[str], list[_TableRows]]:
    """The DDL (tables and indexes) and the rows of the ingest tables, as the store wrote them.
    An edge's integer id is left out: SQLite assigns it, for ecap and for the raw insert alike."""
    conn = sqlite3.connect(path)
    names = ",".join("?" * len(INGEST_TABLES))
    ddl = [
        sql
        for (sql,) in conn.execute(
            f"SELECT sql FROM sqlite_master WHERE tbl_name IN ({names}) AND sql IS NOT NULL "
            "ORDER BY type DESC",  # tables before indexes
            INGEST_TABLES,
        )
    ]
    tables = []
    for name in INGEST_TABLES:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
        if name == "edges":
            columns.remove("id")
        quoted = ", ".join(f'"{c}"' for c in columns)
        rows = conn.execute(f"SELECT {quoted} FROM {name} ORDER BY rowid").fetchall()
        tables.append(_TableRows(name, columns, rows))
    conn.close()
    return ddl, tables


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the store's pragmas (see store._sqlite_pragmas), in
    autocommit mode so that each BEGIN ... COMMIT below is exactly one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "busy_timeout=30000",
        "foreign_keys=ON",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def raw_insert(
    path: Path, ddl: Sequence[str], tables: Sequence[_TableRows], batches: int
) -> Timing:
    """Insert ``tables`` with executemany, split into ``batches`` transactions (batch ``b`` holds
    the ``b``-th slice of every table, as one save_batch call held its share of each table)."""
    conn = sqlite_connect(path)
    for statement in ddl:
        conn.execute(statement)
    plans = []
    for t in tables:
        marks = ", ".join("?" * len(t.columns))
        quoted = ", ".join(f'"{c}"' for c in t.columns)
        plans.append(
            (
                f"INSERT INTO {t.name} ({quoted}) VALUES ({marks})",
                t.rows,
                math.ceil(len(t.rows) / batches),
            )
        )
    clock = _Clock()
    for b in range(batches):
        conn.execute("BEGIN")
        for sql, rows, per in plans:
            chunk = rows[b * per : (b + 1) * per]
            if chunk:
                conn.executemany(sql, chunk)
        conn.execute("COMMIT")
    elapsed = clock.stop()
    conn.close()
    return elapsed


def ingest_benchmark(tmp: Path, n: int, batch: int) -> None:
    print(f"1. INGEST: {n:,} pre-hashed rows (pairs with made-up sha256; no image read or hashed)")
    print(
        f"   batch size {batch:,} rows per transaction for both sides "
        f"(the runner's default step batch_size is {StepOptions().batch_size}; set it with "
        "`options: {batch_size: ...}` or --batch-size here)"
    )
    step_key = digest("step", "source", "prehashed", ecap.__version__)
    started = time.perf_counter()
    inputs = prehashed_inputs(n, step_key)
    print(
        f"   building the Pair/Item objects and cache keys (not timed below): "
        f"{time.perf_counter() - started:.2f} s"
    )

    ecap_db = tmp / "ingest-ecap.db"
    ecap_t, save_s = ecap_ingest(ecap_db, inputs, step_key, batch)
    del inputs
    ddl, tables = written_rows(ecap_db)
    counts = {t.name: len(t.rows) for t in tables}
    total_rows = sum(counts.values())
    print(
        "   rows the store wrote, counted from its tables: "
        + ", ".join(f"{name} {count:,}" for name, count in counts.items())
        + f" = {total_rows:,} rows"
        + (" (a source step's pairs have no lineage edges)" if counts["edges"] == 0 else "")
    )
    batches = math.ceil(n / batch)
    raw_t = raw_insert(tmp / "ingest-raw.db", ddl, tables, batches)
    pairs_only = [t for t in tables if t.name == "pairs"]
    raw_pairs_t = raw_insert(
        tmp / "ingest-raw-pairs.db", ddl_for(ddl, "pairs"), pairs_only, batches
    )

    print(f"   {'':58s} {'wall':>9s} {'pairs/s':>9s} {'CPU':>9s}")
    for label, t in (
        ("ecap: runner _commit bookkeeping + Store.save_batch", ecap_t),
        (f"raw sqlite3 executemany, the same {total_rows:,} rows", raw_t),
        (f"raw sqlite3 executemany, the {counts['pairs']:,} pair rows alone", raw_pairs_t),
    ):
        print(f"   {label:58s} {t.wall:7.2f} s {n / t.wall:9,.0f} {t.cpu:7.2f} s")
    print(f"   (ecap wall time inside save_batch: {save_s:.2f} s)")
    ratio = ecap_t.wall / raw_t.wall
    print(
        f"   RATIO ecap / raw (same rows, all tables): {ratio:5.2f}x wall, "
        f"{ecap_t.cpu / raw_t.cpu:5.2f}x CPU   "
        f"(target from the issue: within 2x; {'met' if ratio <= 2 else 'NOT met'} on wall time)"
    )
    print(
        "   ratio ecap / raw (pair rows alone):       "
        f"{ecap_t.wall / raw_pairs_t.wall:5.2f}x wall, "
        f"{ecap_t.cpu / raw_pairs_t.cpu:5.2f}x CPU   (information)"
    )


def ddl_for(ddl: Sequence[str], table: str) -> list[str]:
    return [s for s in ddl if s.startswith(f"CREATE TABLE {table} ") or f" ON {table} (" in s]


# -- 2. provenance -----------------------------------------------------------------------------


def sql_time(moment: datetime) -> str:
    """A timestamp as SQLAlchemy's SQLite DateTime type stores it."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def insert_rows(conn: sqlite3.Connection, table: str, rows: Iterator[dict[str, Any]]) -> None:
    """Bulk-insert dict rows, JSON columns encoded as SQLAlchemy's JSON type encodes them."""
    first = next(rows)
    columns = list(first)
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    values = (
        tuple(json.dumps(r[c]) if isinstance(r[c], dict | list) else r[c] for c in columns)
        for r in itertools.chain([first], rows)
    )
    conn.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", values)


def is_kept(i: int) -> bool:
    return i % 10 < round(10 * KEEP_SHARE)


def kept_count(n: int) -> int:
    return sum(1 for i in range(n) if is_kept(i))


def build_provenance_store(path: Path, min_rows: int, seed: int) -> tuple[list[str], str]:
    """A store of >= ``min_rows`` rows shaped like the paper's pipeline (see the module docstring).
    Returns (ids of the pairs whose score the dataset kept, the dataset id)."""
    # Rows per pair: pair, instruction, score, 2 edges, 3 sample_results, and a dataset edge for
    # the kept share; plus the dataset, the model, its edge, 2 sample_results, 1 run, 5 step runs.
    n = 1
    while 8 * n + kept_count(n) + 11 < min_rows:
        n = max(n + 1, math.ceil((min_rows - 11) / (8 + KEEP_SHARE)))
    store = Store(f"sqlite:///{path}")
    run_id = store.start_run(
        name="editcaption-paper",
        spec_path="examples/paper/pipeline.yaml",
        spec_text="",
        spec_hash=digest("benchmark-provenance"),
        ecap_version=ecap.__version__,
        plugins={},
    )
    steps = {}
    for step_id, kind, plugin in (
        ("pairs", "source", "csv"),
        ("glm", "caption", "glm"),
        ("scored", "filter", "editscore"),
        ("sft_data", "export", "jsonl"),
        ("sft", "train", "sft"),
    ):
        key = digest("step", kind, plugin, step_id)
        steps[step_id] = (
            store.start_step(
                run_id=run_id,
                step_id=step_id,
                kind=kind,
                plugin=plugin,
                plugin_version="1.0",
                package=f"ecap_{plugin}",
                config={"model": plugin},
                step_key=key,
            ),
            key,
        )
    store.close()

    rng = random.Random(seed)
    now = sql_time(datetime.now(UTC))
    pair_ids = [fake_sha256("pair", i) for i in range(n)]
    instruction_ids = [new_id() for _ in range(n)]
    score_ids = [new_id() for _ in range(n)]
    threshold = 10 * (1 - KEEP_SHARE)  # the filter's min_score: exactly KEEP_SHARE are kept
    kept = [i for i in range(n) if is_kept(i)]
    score_values = [
        round(rng.uniform(threshold, 10) if is_kept(i) else rng.uniform(0, threshold - 0.01), 2)
        for i in range(n)
    ]
    dataset_id, model_id = new_id(), new_id()

    def sr(step: str, i: int, input_key: str, outputs: list[dict[str, str]]) -> dict[str, Any]:
        step_run_id, key = steps[step]
        return {
            "cache_key": digest(key, input_key),
            "step_key": key,
            "input_key": input_key,
            "outputs": outputs,
            "step_run_id": step_run_id,
            "created_at": now,
        }

    def edge(src: tuple[str, str], verb: str, dst: tuple[str, str], step: str) -> dict[str, Any]:
        return {
            "src_type": src[0],
            "src_id": src[1],
            "verb": verb,
            "dst_type": dst[0],
            "dst_id": dst[1],
            "step_run_id": steps[step][0],
        }

    def image(i: int, side: str) -> dict[str, Any]:
        return {
            "uri": f"/data/pairs/{i:07d}_{side}.jpg",
            "sha256": fake_sha256(side, i),
            "width": 1024,
            "height": 768,
            "format": "JPEG",
        }

    conn = sqlite_connect(path)
    conn.execute("BEGIN")
    insert_rows(
        conn,
        "pairs",
        (
            {
                "id": pair_ids[i],
                "source": image(i, "source"),
                "target": image(i, "target"),
                "category": ("add", "remove", "replace", "style", "background")[i % 5],
                "meta": {"source_file": "/data/pairs.csv", "row": i + 2},
                "step_run_id": steps["pairs"][0],
                "created_at": now,
            }
            for i in range(n)
        ),
    )
    insert_rows(
        conn,
        "instructions",
        (
            {
                "id": instruction_ids[i],
                "pair_id": pair_ids[i],
                "text": f"Replace the red car on the left with a blue bicycle, number {i}.",
                "origin": "model",
                "parent_id": None,
                "author": "glm-4.5v",
                "candidate": 0,
                "meta": {},
                "step_run_id": steps["glm"][0],
                "created_at": now,
            }
            for i in range(n)
        ),
    )
    insert_rows(
        conn,
        "scores",
        (
            {
                "id": score_ids[i],
                "pair_id": pair_ids[i],
                "instruction_id": instruction_ids[i],
                "scorer": "editscore",
                "values": {"overall": score_values[i]},
                "meta": {},
                "step_run_id": steps["scored"][0],
                "created_at": now,
            }
            for i in range(n)
        ),
    )
    insert_rows(
        conn,
        "datasets",
        iter(
            [
                {
                    "id": dataset_id,
                    "name": "sft_data",
                    "content_hash": digest("dataset", len(kept)),
                    "format": "jsonl",
                    "uri": "/data/out/sft_data.jsonl",
                    "count": len(kept),
                    "meta": {},
                    "step_run_id": steps["sft_data"][0],
                    "created_at": now,
                }
            ]
        ),
    )
    insert_rows(
        conn,
        "models",
        iter(
            [
                {
                    "id": model_id,
                    "name": "sft",
                    "uri": "/models/sft",
                    "revision": None,
                    "base_model_id": None,
                    "meta": {},
                    "step_run_id": steps["sft"][0],
                    "created_at": now,
                }
            ]
        ),
    )

    def edges() -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield edge(
                ("instruction", instruction_ids[i]), "wasDerivedFrom", ("pair", pair_ids[i]), "glm"
            )
            yield edge(
                ("score", score_ids[i]), "used", ("instruction", instruction_ids[i]), "scored"
            )
        for i in kept:
            yield edge(("dataset", dataset_id), "used", ("score", score_ids[i]), "sft_data")
        yield edge(("model", model_id), "used", ("dataset", dataset_id), "sft")

    insert_rows(conn, "edges", edges())

    def results() -> Iterator[dict[str, Any]]:
        for i in range(n):
            row_key = digest("csv-row", i)
            yield sr("pairs", i, row_key, [{"pair": pair_ids[i]}])
            pair_key = f"pair={pair_ids[i]}"
            yield sr("glm", i, pair_key, [{"pair": pair_ids[i], "instruction": instruction_ids[i]}])
            instruction_key = f"{pair_key}|instruction={instruction_ids[i]}"
            yield sr(
                "scored",
                i,
                instruction_key,
                [{"pair": pair_ids[i], "instruction": instruction_ids[i], "score": score_ids[i]}],
            )
        yield sr("sft_data", 0, "dataset", [{"dataset": dataset_id}])
        yield sr("sft", 0, "model", [{"dataset": dataset_id, "model": model_id}])

    insert_rows(conn, "sample_results", results())
    conn.execute("COMMIT")
    conn.close()
    return [pair_ids[i] for i in kept], dataset_id


def table_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    names = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
    ]
    counts = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}
    conn.close()
    return counts


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def ecap_command() -> list[str]:
    """The installed console script next to this interpreter (a pyenv shim would add its own
    start-up), else ``python -m ecap.cli``."""
    script = Path(sys.executable).parent / "ecap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ecap.cli"]


def provenance_benchmark(tmp: Path, min_rows: int, walks: int, seed: int) -> None:
    print(f"2. PROVENANCE: a store of >= {min_rows:,} rows, lineage walks of random pairs")
    path = tmp / "provenance.db"
    started = time.perf_counter()
    kept_pairs, dataset_id = build_provenance_store(path, min_rows, seed)
    built = time.perf_counter() - started
    counts = table_counts(path)
    counted = {k: v for k, v in counts.items() if v and k != "alembic_version"}
    print(
        f"   built with bulk sqlite3 inserts into the store's tables in {built:.1f} s "
        f"({path.stat().st_size / 2**20:,.0f} MiB); rows counted per table:"
    )
    print("   " + ", ".join(f"{name} {count:,}" for name, count in counted.items()))
    print(
        f"   total {sum(counted.values()):,} rows (runs and step_runs included; "
        "alembic_version not counted)"
    )

    store = Store(f"sqlite:///{path}", auto_upgrade=False)  # as the CLI opens it
    rng = random.Random(seed)
    sample = rng.sample(kept_pairs, min(walks, len(kept_pairs)))
    for pair_id in rng.sample(kept_pairs, 3):  # warm the connection pool and step-run lookups
        provenance.walk(store, pair_id)
    times, resolve_times = [], []
    for pair_id in sample:
        before = time.perf_counter()
        node = provenance.walk(store, pair_id)
        times.append(time.perf_counter() - before)
        chain = [node["type"]]
        while node.get("uses"):
            node = node["uses"][0]
            chain.append(node["type"])
        assert chain == ["pair", "instruction", "score", "dataset", "model"], chain
        before = time.perf_counter()
        provenance.resolve(store, pair_id)
        resolve_times.append(time.perf_counter() - before)
    ms = [t * 1000 for t in times]
    median = statistics.median(ms)
    print(
        f"   ecap.provenance.walk(store, pair_id), {len(ms)} random kept pairs, each walking "
        "pair -> instruction -> score -> dataset -> model (5 records, default depth 6):"
    )
    print(
        f"   MEDIAN {median:.2f} ms   p95 {percentile(ms, 0.95):.2f} ms   "
        f"min {min(ms):.2f} ms   max {max(ms):.2f} ms   "
        f"(target: median under 10 ms; {'met' if median < 10 else 'NOT met'})"
    )
    resolve_ms = [t * 1000 for t in resolve_times]
    print(
        f"   of which resolving the id (provenance.resolve -> Store.find), timed separately: "
        f"median {statistics.median(resolve_ms):.2f} ms   p95 {percentile(resolve_ms, 0.95):.2f} ms"
    )
    before = time.perf_counter()
    node = provenance.walk(store, dataset_id)
    dataset_ms = (time.perf_counter() - before) * 1000
    print(
        f"   for information, one walk of the dataset itself ({node.get('origins_omitted', 0):,} "
        f"origins left out past the fan-out cap of {provenance.FANOUT}): {dataset_ms:.1f} ms"
    )
    store.close()

    command = ecap_command()
    before = time.perf_counter()
    done = subprocess.run(
        [*command, "provenance", "show", sample[0], "--json", "--store", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    cli_ms = (time.perf_counter() - before) * 1000
    assert json.loads(done.stdout)["id"] == sample[0]
    before = time.perf_counter()
    subprocess.run([*command, "--help"], capture_output=True, check=True)
    help_ms = (time.perf_counter() - before) * 1000
    print(
        f"   information only, one subprocess each ({' '.join(Path(c).name for c in command)}): "
        f"`ecap provenance show ID --json` {cli_ms:.0f} ms; `ecap --help` {help_ms:.0f} ms "
        "(process start and imports dominate both)"
    )


if __name__ == "__main__":
    main()
