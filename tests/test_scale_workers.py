"""``ecap pipeline run --worker``: N worker processes on one PostgreSQL store split every
per-sample step through the store's claims, compute each sample once, leave human, train and
export steps to a run without ``--worker`` (waiting for it), and finish the samples of a worker
killed mid-batch once its lease lapses.

A worker on another machine is simulated by a process with its own host name (a UTS namespace,
``unshare -u``): claims trust a holder on another host until its lease lapses, whereas a dead
process on this host frees its claims at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ecap.store import Store
from ecap.testing import make_pairs

pytestmark = pytest.mark.postgres

PAIRS = 24

RUN_WITH_FAKES = """
import sys
from ecap.cli import main
from ecap.plugins import set_registry
from ecap.testing import registry_with_fakes
set_registry(registry_with_fakes())
main(sys.argv[1:])
"""


@pytest.fixture
def postgres_url(store_url: str) -> str:
    if not store_url.startswith("postgresql"):
        pytest.skip("workers share a PostgreSQL store")
    return store_url


def write_spec(folder: Path, store: str, delay: float, export: bool) -> Path:
    """A CSV source and a fake captioner whose calls each worker logs to its own
    ``$HISTORY`` file (a transport field: it is not part of any key); optionally an export."""
    csv_file = make_pairs(folder, PAIRS)
    spec = folder / "spec.yaml"
    spec.write_text(
        f"store: {store}\n"
        "steps:\n"
        f"  pairs: {{source: csv, with: {{path: {csv_file}}}, batch_size: 4}}\n"
        "  captions:\n"
        "    caption: fake\n"
        "    from: pairs\n"
        "    batch_size: 3\n"
        f"    with: {{delay: {delay}, history_file: '${{env:HISTORY}}'}}\n"
        + (
            f"  out: {{export: jsonl, from: captions, with: {{path: {folder / 'out.jsonl'}}}}}\n"
            if export
            else ""
        )
    )
    (folder / "run.py").write_text(RUN_WITH_FAKES)
    return spec


def start(
    folder: Path, spec: Path, name: str, *options: str, host: str | None = None
) -> subprocess.Popen[str]:
    """A run whose calls go to ``NAME.jsonl`` and whose log goes to ``NAME.log``."""
    command = [sys.executable, str(folder / "run.py"), "pipeline", "run", str(spec)]
    command += ["--no-progress", "--json", *options]
    if host is not None:  # the same machine, under another host name: a remote worker to claims
        command = ["unshare", "-u", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *command]
    env = {**os.environ, "HISTORY": str(folder / f"{name}.jsonl")}
    log = (folder / f"{name}.log").open("w")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)


def finish(run: subprocess.Popen[str], folder: Path, name: str) -> tuple[dict[str, Any], str]:
    out, _ = run.communicate(timeout=300)
    err = (folder / f"{name}.log").read_text()
    assert run.returncode == 0, err
    assert "Traceback" not in err, err
    return json.loads(out), err


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def captioned(folder: Path, name: str) -> list[str]:
    path = folder / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["pair"] for line in path.read_text().splitlines()]


def caption_results(url: str) -> Counter[str]:
    """Which run committed how many caption samples."""
    from sqlalchemy import select

    from ecap.store.schema import SampleResult, StepRun

    store = Store(url, read_only=True)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(StepRun.run_id)
            .join(SampleResult, SampleResult.step_run_id == StepRun.id)
            .where(StepRun.step_id == "captions")
        )
        return Counter(row.run_id for row in rows)


def test_four_workers_compute_every_sample_exactly_once_and_wait_for_the_export(
    postgres_url, tmp_path
):
    spec = write_spec(tmp_path, postgres_url, delay=0.2, export=True)
    names = [f"w{i}" for i in range(4)]
    workers = [start(tmp_path, spec, name, "--worker") for name in names]
    waiting = "waiting for a run without --worker"
    wait_until(
        lambda: all(waiting in (tmp_path / f"{n}.log").read_text() for n in names),
        "every worker has captioned its share and waits for the export",
    )
    assert all(w.poll() is None for w in workers), "workers wait; they do not skip or fail"

    coordinator = start(tmp_path, spec, "coordinator")  # the one run without --worker
    coordinated, _ = finish(coordinator, tmp_path, "coordinator")
    reports = [finish(w, tmp_path, n) for w, n in zip(workers, names, strict=True)]

    everyone = [p for name in names for p in captioned(tmp_path, name)]
    assert len(everyone) == PAIRS and len(set(everyone)) == PAIRS, "a pair was captioned twice"
    assert sum(1 for name in names if captioned(tmp_path, name)) >= 2, "the work was shared"
    assert sum(caption_results(postgres_url).values()) == PAIRS
    statuses = {s["step"]: s["status"] for s in coordinated["steps"]}
    assert statuses == {"pairs": "cached", "captions": "cached", "out": "complete"}
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == PAIRS
    for report, _ in reports:
        assert report["status"] == "complete"
        assert report["steps"][-1] == {**report["steps"][-1], "step": "out", "status": "cached"}


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a second host")
def test_a_worker_killed_mid_batch_has_its_samples_finished_by_the_others_after_its_lease(
    postgres_url, tmp_path
):
    probe = subprocess.run(["unshare", "-u", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -u is not permitted here: {probe.stderr.decode().strip()}")
    spec = write_spec(tmp_path, postgres_url, delay=3.0, export=False)
    lease = ["--lease", "12"]  # longer than the survivors take to reach the captions
    victim = start(tmp_path, spec, "victim", "--worker", *lease, host="worker-b")
    wait_until(lambda: bool(captioned(tmp_path, "victim")), "the victim starts a caption batch")
    in_flight = captioned(tmp_path, "victim")
    os.kill(victim.pid, signal.SIGKILL)  # mid-batch: the batch takes 3 s, nothing committed
    victim.wait()
    others = [start(tmp_path, spec, f"w{i}", "--worker", *lease) for i in range(3)]

    reports = [finish(w, tmp_path, f"w{i}") for i, w in enumerate(others)]

    survivors = [p for i in range(3) for p in captioned(tmp_path, f"w{i}")]
    assert Counter(survivors) == Counter(set(survivors)), "no survivor computed a pair twice"
    assert len(set(survivors)) == PAIRS
    assert set(in_flight) <= set(survivors), "the killed worker's batch was finished by others"
    assert sum(caption_results(postgres_url).values()) == PAIRS
    assert all(report["status"] == "complete" for report, _ in reports)
    waits = [err for _, err in reports if "on host worker-b" in err]
    assert waits, "a survivor waited for the dead worker's claims until its lease lapsed"
