"""Core benchmark: importing pairs end to end against a raw script, and the speed of a lineage walk.

Run from the repository root (SQLite only; nothing here needs a GPU or the network)::

    python benchmarks/core_ingest.py            # full: 10,000 pairs at 8 px, 1,000 at 512 px, then
                                                # a >= 1,000,000-row store
    python benchmarks/core_ingest.py --quick    # smoke run: 1,000 and 100 pairs, 50,000 rows

It prints measured numbers and ratios; it never asserts a timing threshold (the goals below are
printed next to the figures, for a reader to judge on their own machine).

1. Ingest, end to end (goals from issue 17: at most 1.5x the raw script at 8 px; at 512 px faster
   than it). For each image size, ``--pairs`` (8 px) or ``--large-pairs`` (512 px) pairs of real
   image files are generated (8 px: PNG; 512 px: JPEG of a noisy gradient, so decoding costs what
   a photo's does) with a CSV listing them. Timed, on the same files in the same run: ``ecap
   pipeline run`` of a spec holding only the ``csv`` source, as a user runs it (a fresh process of
   the console script, default options, the store a new SQLite file: start-up, reading, hashing,
   decoding, records and commits all included), and the raw script (``_raw_ingest.py``, about 30
   lines, also a fresh process: read both files, decode-check with Pillow, sha256, insert with
   ``sqlite3`` ``executemany`` in batches of 1,000, WAL and synchronous=NORMAL like the store).
   Files were just written, so both sides read them from the page cache. The sides take
   ``--repeats`` turns, alternating; medians are compared.

2. Provenance (target: median walk under 10 ms).
   A store of at least ``--provenance-rows`` rows is built with bulk ``sqlite3`` inserts into the
   store's own tables (created by ``Store``, with runs and step runs started through the
   ``Store`` API). Its shape follows the paper's pipeline: per pair, a model
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
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _e2e import Timing, describe_machine, run_ecap, run_timed, write_pairs

import ecap
from ecap import provenance
from ecap.hashing import digest
from ecap.records import new_id
from ecap.store import Store

KEEP_SHARE = 0.7  # share of scored instructions the filter keeps, used by the dataset
RAW_SCRIPT = Path(__file__).with_name("_raw_ingest.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000, help="8 px pairs (10,000)")
    parser.add_argument("--large-pairs", type=int, default=1_000, help="512 px pairs (1,000)")
    parser.add_argument(
        "--provenance-rows",
        type=int,
        default=1_000_000,
        help="minimum rows in the provenance store, all tables together (1,000,000)",
    )
    parser.add_argument("--walks", type=int, default=200, help="random pairs to walk (200)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 and 100 pairs, 50,000 rows"
    )
    parser.add_argument("--skip-provenance", action="store_true", help="run the ingest part only")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs of each ingest side (3)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.large_pairs, args.provenance_rows = 1_000, 100, 50_000

    print(f"ecap {ecap.__version__}, {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="ecap-bench-") as tmp:
        print(f"work dir (removed at exit): {tmp}\n")
        print("1. INGEST, end to end: `ecap pipeline run` (csv source) against a raw script")
        for size, count, goal in ((8, args.pairs, 1.5), (512, args.large_pairs, 1.0)):
            ingest_benchmark(Path(tmp) / f"ingest-{size}px", count, size, goal, args.repeats)
        if not args.skip_provenance:
            print()
            provenance_benchmark(Path(tmp), args.provenance_rows, args.walks, args.seed)


# -- 1. ingest ---------------------------------------------------------------------------------


def fake_sha256(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def stored_pairs(db: Path) -> int:
    conn = sqlite3.connect(db)
    (count,) = conn.execute("SELECT count(*) FROM pairs").fetchone()
    conn.close()
    return count


def ingest_benchmark(folder: Path, count: int, size: int, goal: float, repeats: int) -> None:
    folder.mkdir()
    started = time.perf_counter()
    pairs_csv = write_pairs(folder, count, size)
    spec = folder / "import.yaml"
    spec.write_text(f"steps:\n  pairs: {{source: csv, with: {{path: {pairs_csv}}}}}\n")
    print(
        f"\n   {count:,} pairs of {size} px images ({'PNG' if size <= 64 else 'JPEG'}), "
        f"generated in {time.perf_counter() - started:.1f} s (not timed); "
        f"{repeats} alternating runs of each side, medians"
    )
    raw_runs, ecap_runs = [], []
    for turn in range(repeats):
        raw_db, ecap_db = folder / f"raw-{turn}.db", folder / f"ecap-{turn}.db"
        raw_runs.append(run_timed([sys.executable, str(RAW_SCRIPT), str(pairs_csv), str(raw_db)]))
        ecap_runs.append(
            run_ecap(["pipeline", "run", str(spec), "--store", str(ecap_db), "--no-progress"])
        )
        written = stored_pairs(ecap_db), stored_pairs(raw_db)
        if written != (count, count):
            sys.exit(f"pairs written: ecap {written[0]:,}, raw {written[1]:,}; expected {count:,}")
    ecap_t, raw_t = median_timing(ecap_runs), median_timing(raw_runs)

    print(f"   {'':56s} {'wall':>9s} {'pairs/s':>9s} {'CPU':>9s}")
    for label, t in (
        ("ecap pipeline run (a fresh process, start-up included)", ecap_t),
        ("raw script (a fresh process, start-up included)", raw_t),
    ):
        print(f"   {label:56s} {t.wall:7.2f} s {count / t.wall:9,.0f} {t.cpu:7.2f} s")
    ratio = ecap_t.wall / raw_t.wall
    verdict = "met" if ratio <= goal else "NOT met"
    each = ", ".join(f"{e.wall / r.wall:.2f}" for e, r in zip(ecap_runs, raw_runs, strict=True))
    print(
        f"   RATIO ecap / raw at {size} px: {ratio:.2f}x wall (runs: {each}), "
        f"{ecap_t.cpu / raw_t.cpu:.2f}x CPU (goal: at most {goal}x; {verdict})"
    )


def median_timing(runs: Sequence[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in runs), statistics.median(t.cpu for t in runs))


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
