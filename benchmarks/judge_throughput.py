"""Judge throughput: how close ecap's judging step comes to the ideal for a latency-bound API.

Run from the repository root (needs the ``judges`` extra; no network, no GPU)::

    python benchmarks/judge_throughput.py                    # 1,200 calls, 200 ms, concurrency 32
    python benchmarks/judge_throughput.py --provider gemini  # or openai (default), or both
    python benchmarks/judge_throughput.py --calls 300 --latency 0.05    # a quick smoke run
    python benchmarks/judge_throughput.py --provider both --rate-limit 3000  # rate-limited mode

A local fake server (``ecap.testing.FakeLLMServer``, in a process of its own like any real API)
answers every call after ``--latency`` seconds. Two things are timed against it, in this order:

1. the baseline, *the provider alone*: the very requests the judge would send (``--calls / 3``
   instructions, one call per rubric axis), sent by the judge's provider (the real SDK call and
   nothing else) with ``--concurrency`` in flight;
2. *the judging step*: a spec's judge step through the real runner, engine and store, i.e. the
   same calls plus everything ecap does around them: call-log lookups and writes, the rate gate,
   retries, parsing, the rubric rules, the verdicts' commits.

The ideal is ``calls x latency / concurrency``: what a client that costs nothing would need with
``--concurrency`` calls always in flight. Printed: each ratio ideal / measured (the issue's target
for the step is >= 0.9), the step's throughput as a share of the baseline's, and the client CPU
time per call. On a small machine the SDK's own CPU time per call bounds both ratios: at 200 ms
and 32 in flight the client must finish a call every 6 ms. The pairs' import is a separate,
earlier run and is not timed. Nothing here asserts a threshold.

Rate-limited mode (``--rate-limit N``): the server admits N requests a minute over a sliding
``--window`` (``ecap.testing.servers.RateLimit``) and refuses the rest with each provider's real
429. The judging step runs twice, each on a fresh store and server: told the limit
(``requests_per_minute: N``, as a user copies it from the provider's page) and told nothing (it
learns the limit from the answers and refusals). Printed: the calls a minute it sustained as a
share of N (target >= 0.95) and the share of requests refused (target <= 1 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from PIL import Image

from ecap.interfaces import PluginContext, Source
from ecap.plugins import Registry
from ecap.spec import load_spec
from ecap.testing import FakeLLMServer, LLMRequest, registry_with_fakes, run_spec
from ecap.testing.servers import RateLimit
from ecap_judges.engine import RubricJudge

TARGET = 0.9
TARGET_VS_PROVIDER = 0.95
TARGET_OF_LIMIT = 0.95
MAX_REFUSED = 0.01


def make_eval_set(folder: Path, count: int) -> None:
    """``count`` distinct 64x64 pairs with an instruction and a two-change reference each."""
    images = folder / "images"
    images.mkdir(parents=True)
    with (folder / "eval.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["source", "target", "instruction", "primary", "secondary", "overall"])
        for i in range(count):
            colour = (i % 256, (i // 256) % 256, 40)
            Image.new("RGB", (64, 64), colour).save(images / f"{i}-s.png")
            Image.new("RGB", (64, 64), (*colour[:2], 200)).save(images / f"{i}-t.png")
            writer.writerow(
                [
                    f"images/{i}-s.png",
                    f"images/{i}-t.png",
                    f"Turn the background of scene {i} blue and add a red ball on the left.",
                    json.dumps(["the background turns blue", "a red ball appears on the left"]),
                    json.dumps(["the shadows soften"]),
                    "a blue scene with a ball",
                ]
            )


def answer(request: LLMRequest) -> dict[str, Any]:
    """A plausible judgement for whichever axis the request's schema describes."""
    schema = json.dumps(request.schema or {}).lower()
    checks = [{"change": 1, "status": "hit"}, {"change": 2, "status": "partial"}]
    if "hallucination" in schema:
        return {
            "assertions": ["the background turns blue", "a ball appears"],
            "primary_changes": checks,
            "hallucination": False,
            "major_errors": 0,
            "minor_errors": 0,
            "score": 4,
            "reasoning": "both changes named; the ball's position is vague",
        }
    if "secondary_covered" in schema:
        return {
            "primary_changes": checks,
            "secondary_covered": False,
            "score": 4,
            "reasoning": "one change is only partly described",
        }
    return {"forbidden_terms": [], "score": 5, "reasoning": "precise"}


def serve(latency: float, limit: RateLimit | None, conn: Connection) -> None:
    """The fake API, in its own process as a real API would be: its CPU is not the client's."""
    with FakeLLMServer(answer, latency=latency, rate_limit=limit) as server:
        conn.send((server.url, server.openai_base_url))
        conn.recv()  # until told to stop
        conn.send(
            (server.count(), server.max_concurrency, time.process_time(), server.rate_limited())
        )


@contextlib.contextmanager
def server_process(
    latency: float, limit: RateLimit | None = None
) -> Iterator[tuple[tuple[str, str], Connection]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=serve, args=(latency, limit, theirs)
    )
    process.start()
    try:
        yield ours.recv(), ours
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def judge_config(
    urls: tuple[str, str], provider: str, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": "gemini-2.5-pro" if provider == "gemini" else "gpt-4.1",
        "api_key": "${env:FAKE_LLM_KEY}",
        "base_url": urls[0] if provider == "gemini" else urls[1],
        "max_concurrent_calls": args.concurrency,
        "timeout": 30,
    }
    if mode == "configured":  # the provider's published limit, as a user would write it
        config["requests_per_minute"] = args.rate_limit
    return config


def write_spec(
    folder: Path,
    urls: tuple[str, str],
    provider: str,
    args: argparse.Namespace,
    mode: str = "latency",
) -> Path:
    steps: dict[str, Any] = {"eval": {"source": "csv", "with": {"path": "eval.csv"}}}
    if provider != "none":
        steps["judge"] = {
            "judge": provider,
            "from": "eval",
            "with": judge_config(urls, provider, args, mode),
            # Enough items in flight to keep every call slot busy across batch boundaries.
            "batch_size": args.batch_size,
            "concurrency": args.batches_in_flight,
        }
    spec = {"name": "judge-throughput", "store": "sqlite:///ecap.db", "steps": steps}
    path = folder / f"spec-{provider}.yaml"
    path.write_text(json.dumps(spec, indent=1))
    return path


def context(step_id: str, folder: Path) -> PluginContext:
    return PluginContext(step_id=step_id, base_dir=folder, work_dir=folder)


def provider_alone(
    folder: Path, urls: tuple[str, str], provider: str, args: argparse.Namespace, registry: Registry
) -> float:
    """The baseline: the same requests sent by the judge's provider (the SDK call and nothing
    else: no runner, store, call log, parsing or rules) with the same concurrency. Seconds."""
    spec = load_spec(write_spec(folder, urls, provider, args), registry)
    steps = {id: spec.steps[id] for id in ("eval", "judge")}
    plugins = {
        id: step.plugin.cls(
            step.config, PluginContext(step_id=id, base_dir=folder, work_dir=folder)
        )
        for id, step in steps.items()
    }
    source, judge = plugins["eval"], plugins["judge"]
    assert isinstance(source, Source) and isinstance(judge, RubricJudge)
    loaded = source.load(list(source.rows()))
    items = [item for result in loaded if isinstance(result, list) for item in result]
    requests = [request for item in items for _, request in judge.requests_for(item)]

    async def send_all() -> None:
        gate = asyncio.Semaphore(args.concurrency)

        async def one(request: Any) -> None:
            async with gate:
                await judge.provider.send(request, 30.0)

        await asyncio.gather(*(one(r) for r in requests))
        await judge.provider.aclose()

    started = time.perf_counter()
    asyncio.run(send_all())
    return time.perf_counter() - started


def measure(
    provider: str, args: argparse.Namespace, registry: Registry, mode: str = "latency"
) -> dict[str, float]:
    """One timed judging step on a fresh store and server. ``mode``: ``latency`` (no limit at
    the server; the provider alone is timed first), ``configured`` (the server enforces
    ``--rate-limit`` and the judge is told it) or ``learned`` (the judge is told nothing)."""
    instructions = args.calls // 3
    calls = instructions * 3
    limit = None if mode == "latency" else RateLimit(args.rate_limit, window=args.window)
    with tempfile.TemporaryDirectory(prefix="ecap-judge-bench-") as tmp:
        folder = Path(tmp)
        make_eval_set(folder, instructions)
        with server_process(args.latency, limit) as (urls, server):
            run_spec(write_spec(folder, urls, "none", args), registry=registry)  # not timed
            baseline = provider_alone(folder, urls, provider, args, registry) if not limit else 0
            spec = write_spec(folder, urls, provider, args, mode)
            started, cpu = time.perf_counter(), time.process_time()
            result = run_spec(spec, registry=registry)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            server.send("stop")
            served, peak, server_cpu, refused = server.recv()
        if result.status != "complete":
            sys.exit(f"{provider}: the judging run ended {result.status}")
    ideal = calls * args.latency / args.concurrency
    return {
        "calls": calls,
        "served": served - (0 if limit else calls),  # the baseline's calls came first
        "refused": refused,
        "peak": peak,
        "seconds": elapsed,
        "baseline_seconds": baseline,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "server_cpu_s": server_cpu,
        "ideal": ideal,
        "ratio": ideal / elapsed,
    }


def report_latency_bound(provider: str, m: dict[str, float]) -> None:
    print(
        f"{provider:>7} provider alone: {m['calls']:.0f} calls in "
        f"{m['baseline_seconds']:.2f} s; ratio {m['ideal'] / m['baseline_seconds']:.3f}"
    )
    print(
        f"{provider:>7} judging step:   {m['calls']:.0f} calls ({m['served']:.0f} served, peak "
        f"{m['peak']:.0f} in flight) in {m['seconds']:.2f} s, "
        f"{m['calls'] / m['seconds']:.1f} calls/s; ratio {m['ratio']:.3f} "
        f"(target >= {TARGET}); {m['baseline_seconds'] / m['seconds']:.3f} of the provider "
        f"alone's throughput (target >= {TARGET_VS_PROVIDER})"
    )
    print(
        f"{'':>7} client CPU {m['cpu_ms_per_call']:.2f} ms a call in the judging step; "
        f"the server process used {m['server_cpu_s']:.1f} s of CPU in all"
    )


def report_rate_bound(provider: str, mode: str, m: dict[str, float], limit: float) -> None:
    """The sustained rate as a share of the limit, and the share of requests refused."""
    per_minute = m["served"] * 60 / m["seconds"]
    requests = m["served"] + m["refused"]
    print(
        f"{provider:>7} step, limit {mode:<10}: {m['served']:.0f} calls in {m['seconds']:.2f} s "
        f"= {per_minute:.0f}/min, {per_minute / limit:.3f} of the limit (target >= "
        f"{TARGET_OF_LIMIT}); {m['refused']:.0f} of {requests:.0f} requests answered 429 "
        f"({100 * m['refused'] / requests:.2f} %, target <= {100 * MAX_REFUSED:.0f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=["openai", "gemini", "both"], default="openai")
    parser.add_argument("--calls", type=int, default=1200, help="judge calls (3 per instruction)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call at the server")
    parser.add_argument("--concurrency", type=int, default=32, help="the judge's call limit")
    parser.add_argument("--batch-size", type=int, default=32, help="items per runner batch")
    parser.add_argument("--batches-in-flight", type=int, default=4, help="runner concurrency")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0,
        help="requests a minute the server allows (rate-limited mode; 0: latency-bound mode)",
    )
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds of the server's sliding window"
    )
    args = parser.parse_args()
    os.environ.setdefault("FAKE_LLM_KEY", "sk-fake")

    providers = ["openai", "gemini"] if args.provider == "both" else [args.provider]
    # One-time start-up costs, paid once per process whatever the number of calls, are kept out
    # of the timing: finding the plugins and importing the SDKs.
    started = time.perf_counter()
    registry = registry_with_fakes()
    for provider in providers:
        __import__("google.genai" if provider == "gemini" else "openai")
    print(f"start-up (plugins, SDK imports; not timed): {time.perf_counter() - started:.2f} s")
    print(
        f"{args.calls} calls, {args.latency * 1000:.0f} ms each at the server, "
        f"{args.concurrency} in flight; ratio = ideal / measured (target >= {TARGET})"
    )
    if args.rate_limit:
        print(
            f"rate-limited: the server allows {args.rate_limit:g} requests a minute over a "
            f"sliding {args.window:g} s window; the judge is told the limit (configured) or "
            "nothing (learned)"
        )
    for provider in providers:
        if not args.rate_limit:
            report_latency_bound(provider, measure(provider, args, registry))
            continue
        for mode in ("configured", "learned"):
            m = measure(provider, args, registry, mode)
            report_rate_bound(provider, mode, m, args.rate_limit)


if __name__ == "__main__":
    main()
