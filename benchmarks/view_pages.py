"""How fast ``ecap view`` answers on a store of a million pairs.

Builds a SQLite store (through the store's own schema, ``Store(url)``) holding ``--pairs`` pairs,
one model instruction per pair, one judge verdict per instruction (with their lineage edges), then
serves it with ``ecap view``'s application under uvicorn in a thread and times real HTTP requests:
a pair page, the search list (first page, a page deep in the keyset, filtered by category and by
model), a step's record list, and an image. Prints the median and p95 of ``--requests`` requests
each, next to the target (a pair page under 100 ms).

The rows are synthetic and written with SQLAlchemy Core ``text()`` inserts in large transactions
on the store's engine: building the store is not what is measured. Pair ids are made up (unique
hex, not hashes of the images) so that every pair can point at the same two small PNG files, whose
real sha256 the pairs record (the image route checks it).

    python benchmarks/view_pages.py                   # 1,000,000 pairs
    python benchmarks/view_pages.py --pairs 20000     # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from ecap.records import new_id
from ecap.store import Store

CATEGORIES = ("color", "add", "remove", "move", "style", "global")
AUTHORS = ("qwen3-vl-8b", "glm-4.5v", "sft-checkpoint")


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")
    return out.getvalue()


def build(folder: Path, pairs: int, batch: int) -> tuple[str, list[str], str]:
    """The store's URL, a sample of its pair ids, and the source step run's id."""
    url = f"sqlite:///{folder / 'ecap.db'}"
    images = {}
    for side, colour in (("source", (200, 40, 40)), ("target", (40, 40, 200))):
        data = png(colour)
        path = folder / f"{side}.png"
        path.write_bytes(data)
        images[side] = json.dumps(
            {
                "uri": str(path),
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": 64,
                "height": 64,
                "format": "PNG",
            }
        )
    store = Store(url)
    run = store.start_run(
        name="view-benchmark",
        spec_path=str(folder / "spec.yaml"),
        spec_text="",
        spec_hash="0" * 64,
        ecap_version="bench",
        plugins={},
    )
    steps = {
        step: store.start_step(
            run_id=run,
            step_id=step,
            kind=kind,
            plugin=plugin,
            plugin_version="0",
            package="bench",
            config={},
            step_key=f"ecap1:{step}",
        )
        for step, kind, plugin in (
            ("pairs", "source", "csv"),
            ("captions", "caption", "vlm"),
            ("judged", "judge", "gemini"),
        )
    }
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    insert_pair = text(
        "INSERT INTO pairs (id, meta, step_run_id, created_at, source, target, category) "
        "VALUES (:id, '{}', :sr, :now, :source, :target, :category)"
    )
    insert_instruction = text(
        "INSERT INTO instructions (id, meta, step_run_id, created_at, pair_id, text, origin, "
        "parent_id, author, candidate) VALUES (:id, '{}', :sr, :now, :pair, :text, 'model', "
        "NULL, :author, 0)"
    )
    insert_verdict = text(
        "INSERT INTO verdicts (id, meta, step_run_id, created_at, pair_id, instruction_id, "
        "reference_id, judge, kind, axes, reasons, labels, weighted) VALUES (:id, '{}', :sr, "
        ":now, :pair, :instruction, NULL, 'gemini:gemini-2.5-pro', 'model', :axes, :reasons, "
        "'[]', :weighted)"
    )
    insert_edge = text(
        "INSERT INTO edges (src_type, src_id, verb, dst_type, dst_id, step_run_id) "
        "VALUES (:st, :s, :verb, :dt, :d, :sr)"
    )
    rng = random.Random(0)
    sample: list[str] = []
    started = time.perf_counter()
    for start in range(0, pairs, batch):
        rows_p, rows_i, rows_v, rows_e = [], [], [], []
        for n in range(start, min(start + batch, pairs)):
            pair = hashlib.sha256(f"pair {n}".encode()).hexdigest()
            instruction, verdict = new_id(), new_id()
            category = CATEGORIES[n % len(CATEGORIES)]
            accuracy = rng.randint(1, 5)
            rows_p.append(
                {
                    "id": pair,
                    "sr": steps["pairs"],
                    "now": now,
                    "source": images["source"],
                    "target": images["target"],
                    "category": category,
                }
            )
            rows_i.append(
                {
                    "id": instruction,
                    "sr": steps["captions"],
                    "now": now,
                    "pair": pair,
                    "text": f"Change the {category} of object {n}.",
                    "author": AUTHORS[n % len(AUTHORS)],
                }
            )
            rows_v.append(
                {
                    "id": verdict,
                    "sr": steps["judged"],
                    "now": now,
                    "pair": pair,
                    "instruction": instruction,
                    "axes": json.dumps({"accuracy": accuracy, "completeness": 4, "clarity": 5}),
                    "reasons": json.dumps({"accuracy": f"reason {n}"}),
                    "weighted": 0.4 * accuracy + 0.4 * 4 + 0.2 * 5,
                }
            )
            rows_e.append(
                {
                    "st": "instruction",
                    "s": instruction,
                    "verb": "wasDerivedFrom",
                    "dt": "pair",
                    "d": pair,
                    "sr": steps["captions"],
                }
            )
            rows_e.append(
                {
                    "st": "verdict",
                    "s": verdict,
                    "verb": "used",
                    "dt": "instruction",
                    "d": instruction,
                    "sr": steps["judged"],
                }
            )
            if rng.random() < 200 / pairs:
                sample.append(pair)
        with store.engine.begin() as conn:
            conn.execute(insert_pair, rows_p)
            conn.execute(insert_instruction, rows_i)
            conn.execute(insert_verdict, rows_v)
            conn.execute(insert_edge, rows_e)
    for step in steps.values():
        store.finish_step(step, "complete", {"inputs": pairs, "done": pairs})
    store.finish_run(run, "complete")
    store.close()
    took = time.perf_counter() - started
    rows = pairs * 5
    print(f"built {pairs:,} pairs ({rows:,} rows: instructions, verdicts, edges) in {took:.0f} s")
    return url, sample or [hashlib.sha256(b"pair 0").hexdigest()], steps["pairs"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(url: str) -> tuple[str, Callable[[], None]]:
    """``ecap view``'s application over the store, under uvicorn in a thread."""
    import uvicorn

    from ecap_view.app import create_app

    store = Store(url, read_only=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join()
        store.close()

    return f"http://127.0.0.1:{port}", stop


def timed(urls: Iterator[str], count: int) -> list[float]:
    """Milliseconds per request (after one warm-up request, not counted)."""
    times = []
    for i in range(count + 1):
        url = next(urls)
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            body = response.read()
            assert response.status == 200 and body, url
        if i:
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per insert transaction")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecap-view-bench-") as tmp:
        url, sample, source_step = build(Path(tmp), args.pairs, args.batch)
        base, stop = serve(url)
        try:
            with urllib.request.urlopen(f"{base}/search?category=move") as response:
                page = response.read().decode()
            after = page.split("after=")[1].split('"')[0] if "after=" in page else ""
            middle = sorted(sample)[len(sample) // 2]

            def cycle(*urls: str) -> Iterator[str]:
                while True:
                    yield from urls

            cases = {
                "pair page (target: under 100 ms)": cycle(*(f"{base}/pairs/{p}" for p in sample)),
                "search, first page (50 rows)": cycle(f"{base}/search"),
                "search, category filter": cycle(f"{base}/search?category=move"),
                "search, category, second page": cycle(
                    f"{base}/search?category=move&after={after}"
                ),
                "search, model filter": cycle(f"{base}/search?model=glm-4.5v"),
                "search, step filter (the judge's)": cycle(f"{base}/search?step=judged"),
                "search, score range": cycle(f"{base}/search?min_score=4.5&max_score=5"),
                "step page (pairs, 50 rows)": cycle(f"{base}/steps/{source_step}"),
                "image": cycle(f"{base}/image/{middle}/source"),
            }
            # Worst case: a filter nothing matches walks every instruction before saying so.
            worst = "search, no match (full scan)"
            cases[worst] = cycle(f"{base}/search?category=none-such")
            print(f"{'page':<36} {'median ms':>10} {'p95 ms':>8}   ({args.requests} requests)")
            for name, urls in cases.items():
                times = sorted(timed(urls, 3 if name == worst else args.requests))
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                print(f"{name:<36} {statistics.median(times):>10.1f} {p95:>8.1f}")
        finally:
            stop()


if __name__ == "__main__":
    main()
