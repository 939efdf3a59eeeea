"""Scale-out on one machine: captioning on Ray replicas against the in-process executor, and the
store's write throughput against the number of PostgreSQL writers.

Run from the repository root::

    python benchmarks/scale_sim.py                       # both parts
    python benchmarks/scale_sim.py --part ray --pairs 48 # needs the ray and vlm extras
    python benchmarks/scale_sim.py --part store --store-url postgresql+psycopg://u@host/db

**Ray** (``--part ray``): a local Ray cluster with ``--cpus`` CPUs. For each captioner, the same
spec (a CSV source of ``--pairs`` pairs, then a caption step) runs on a fresh SQLite store three
times: in process (the local executor), on 1 replica and on 2 replicas (one CPU each). The figure
is the caption step's wall time as the store recorded it (step start to end, model loading and
every commit included) and its throughput relative to the local executor. Captioners:

- ``fake``: the test captioner sleeping ``--fake-delay`` seconds per batch: no computation, so it
  shows what orchestration costs and how well replicas overlap;
- ``tiny-vlm``: the ``vlm`` captioner on the transformers backend with a tiny random Qwen3-VL
  (real preprocessing, batched generation of ``--new-tokens`` tokens). On a CPU, replicas share the
  same cores: Ray gives each replica one thread (``OMP_NUM_THREADS``), the local executor's torch
  uses them all, so this measures overhead, not what a GPU per replica would give.

**Store** (``--part store``): for 1, 2, 4 and 8 writer processes on a fresh PostgreSQL database
each time (``--store-url``, default ``$ECAP_TEST_POSTGRES_URL``; the role must be allowed to create
databases), the writers split ``--samples`` samples exactly as the runner does: claim a batch of
``--batch-size`` (:class:`ecap.claims.ClaimedWork`), make a pair and an instruction per sample,
commit them with their ``sample_results`` rows in one ``Store.save_batch``. Printed: committed
samples per second from the first writer's start to the last one's end (imports excluded), and the
most connections the writers held at once (``pg_stat_activity``, sampled every 50 ms).

Nothing asserts a threshold: the figures depend on the machine (and on whoever else uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

WRITER = """
import json, sys, time
from ecap.claims import ClaimedWork
from ecap.records import ImageRef, Instruction, Item, Pair
from ecap.store import Store
from ecap.store.store import CompletedSample

url, samples, batch_size, step_key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = Store(url)
run = store.start_run(name="scale-sim", spec_path="-", spec_text="-", spec_hash="0" * 64,
                      ecap_version="bench", plugins={})
step_run = store.start_step(run_id=run, step_id="captions", kind="caption", plugin="bench",
                            plugin_version="1", package="bench", config={}, step_key=step_key)
keys = [f"ecap1:sample-{i:07d}" for i in range(samples)]
started, done = time.time(), 0
with ClaimedWork(store, step_key, run_id=run, poll_seconds=0.05) as work:
    for batch in work.batches(keys, batch_size):
        completed, records = [], []
        for key in batch:
            pair = Pair.of(ImageRef(uri=f"/{key}/a.png", sha256=key[-7:].rjust(64, "a")),
                           ImageRef(uri=f"/{key}/b.png", sha256=key[-7:].rjust(64, "b")))
            instruction = Instruction(pair_id=pair.id, text=f"Edit {key}.", origin="model",
                                      author="bench")
            records += [pair, instruction]
            completed.append(CompletedSample(key, key, [Item(pair=pair,
                                                             instruction=instruction).refs()]))
        store.save_batch(step_run, step_key, "captions", completed, [], records)
        work.done(batch)
        done += len(batch)
print(json.dumps({"start": started, "end": time.time(), "done": done}))
"""


# -- Ray ------------------------------------------------------------------------------------------


def caption_spec(folder: Path, name: str, csv_file: Path, captioner: str, args: Any) -> Path:
    steps: dict[str, Any] = {"pairs": {"source": "csv", "with": {"path": str(csv_file)}}}
    if captioner == "fake":
        config: dict[str, Any] = {"delay": args.fake_delay}
        steps["captions"] = {"caption": "fake", "from": "pairs", "batch_size": args.batch_size}
    else:
        from ecap.testing.tiny_vlm import build_tiny_vlm

        config = {
            "model": str(build_tiny_vlm("qwen3-vl")),
            "sampling": {"max_new_tokens": args.new_tokens},
            "keep_truncated": True,
        }
        steps["captions"] = {"caption": "vlm", "from": "pairs", "batch_size": args.batch_size}
    steps["captions"]["with"] = config
    spec = {"name": name, "store": f"sqlite:///{folder / f'{name}.db'}", "steps": steps}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return path


def caption_seconds(spec_path: Path, executor: Any) -> float:
    """The caption step's wall time, as the store recorded it."""
    from ecap.runner import Runner, RunOptions
    from ecap.spec import load_spec
    from ecap.store import Store
    from ecap.testing import registry_with_fakes

    spec = load_spec(spec_path, registry_with_fakes())
    store = Store(f"sqlite:///{spec_path.with_suffix('.db')}")
    result = Runner(spec, store, RunOptions(progress=False, executor=executor)).run()
    if result.status != "complete":
        raise SystemExit(f"{spec_path.name}: {result.status}: {result.steps}")
    step = next(s for s in store.step_runs(result.run_id) if s["step_id"] == "captions")
    return float((step["finished_at"] - step["started_at"]).total_seconds())


def bench_ray(args: Any) -> list[dict[str, Any]]:
    import ray

    from ecap.executors import ExecutorConfig
    from ecap.testing import make_pairs

    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv_file = make_pairs(folder, args.pairs)
        for captioner in args.captioners:
            local = None
            for label, executor in (
                ("local", None),
                ("ray x1", ExecutorConfig(type="ray", replicas=1)),
                ("ray x2", ExecutorConfig(type="ray", replicas=2)),
            ):
                name = f"{captioner}-{label.replace(' ', '')}".replace("-", "_")
                seconds = caption_seconds(
                    caption_spec(folder, name, csv_file, captioner, args), executor
                )
                local = local or seconds
                rows.append(
                    {
                        "captioner": captioner,
                        "executor": label,
                        "pairs": args.pairs,
                        "seconds": round(seconds, 2),
                        "pairs_per_s": round(args.pairs / seconds, 2),
                        "vs_local": round(local / seconds, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()
    return rows


# -- PostgreSQL writers ------------------------------------------------------------------------


def bench_store(args: Any) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not args.store_url:
        raise SystemExit("--store-url (or $ECAP_TEST_POSTGRES_URL) names a PostgreSQL server")
    admin = create_engine(args.store_url, isolation_level="AUTOCOMMIT")
    rows = []
    for writers in args.writers:
        name = f"ecap_scale_sim_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.store_url).set(database=name).render_as_string(hide_password=False)
        try:
            from ecap.store import Store

            Store(url).close()  # the schema, created once before the clock starts
            rows.append(run_writers(url, name, writers, args, admin))
            print(json.dumps(rows[-1]), flush=True)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
    return rows


def run_writers(url: str, database: str, writers: int, args: Any, admin: Any) -> dict[str, Any]:
    from sqlalchemy import text

    peak, stop = [0], threading.Event()

    def sample_connections() -> None:
        while not stop.wait(0.05):
            with admin.connect() as conn:
                count = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": database},
                ).scalar_one()
            peak[0] = max(peak[0], int(count))

    sampler = threading.Thread(target=sample_connections, daemon=True)
    sampler.start()
    step_key = f"ecap1:scale-sim-{writers}"
    command = [
        sys.executable,
        "-c",
        WRITER,
        url,
        str(args.samples),
        str(args.write_batch),
        step_key,
    ]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(writers)
    ]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=1800)
        if child.returncode != 0:
            raise SystemExit(f"a writer failed:\n{err}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    stop.set()
    sampler.join()
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    done = sum(r["done"] for r in reports)
    if done != args.samples:
        raise SystemExit(f"{done} samples committed for {args.samples}: a claim failed")
    return {
        "writers": writers,
        "samples": done,
        "batch_size": args.write_batch,
        "seconds": round(seconds, 2),
        "samples_per_s": round(done / seconds, 1),
        "peak_connections": peak[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["ray", "store", "both"], default="both")
    parser.add_argument("--pairs", type=int, default=48, help="pairs captioned per executor")
    parser.add_argument("--batch-size", type=int, default=4, help="caption step batch_size")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--captioners", nargs="+", default=["fake", "tiny-vlm"])
    parser.add_argument("--fake-delay", type=float, default=0.25, help="seconds per fake batch")
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--store-url", default=os.environ.get("ECAP_TEST_POSTGRES_URL"))
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--samples", type=int, default=4000, help="samples per writer count")
    parser.add_argument("--write-batch", type=int, default=16, help="samples per commit")
    parser.add_argument("--json", dest="json_out", help="also write every row to this file")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {}
    if args.part in ("ray", "both"):
        rows["ray"] = bench_ray(args)
    if args.part in ("store", "both"):
        rows["store"] = bench_store(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
