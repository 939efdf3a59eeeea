"""Writers sharing a store split a step's samples through per-sample claims with a lease: no
sample is computed twice, everyone finishes, and a dead holder's samples go to the others.

Store level (claim, renew, release, claim_holders), :class:`ecap.claims.ClaimedWork` in threads
and in processes, and whole ``ecap pipeline run`` processes on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ecap.claims import ClaimedWork
from ecap.records import ImageRef, Item, Pair
from ecap.store import Store
from ecap.store.store import CompletedSample, Holder
from ecap.testing import make_pairs, start_step_run

STEP = "ecap1:step"


def keys(n: int) -> list[str]:
    return [f"ecap1:sample-{i:04d}" for i in range(n)]


def a_step_run(store: Store, run_name: str = "t") -> str:
    return start_step_run(
        store, step_id="captions", kind="caption", plugin="fake", step_key=STEP, run_name=run_name
    )


def compute(store: Store, step_run: str, batch: list[str]) -> None:
    """What a step does with a batch: make a pair per sample and save it as finished."""
    pairs = [
        Pair.of(ImageRef(uri=f"/{k}/a", sha256=k[-4:] * 16), ImageRef(uri="/b", sha256="f" * 64))
        for k in batch
    ]
    store.save_batch(
        step_run,
        STEP,
        "captions",
        [CompletedSample(k, k, [Item(pair=p).refs()]) for k, p in zip(batch, pairs, strict=True)],
        [],
        pairs,
    )


# -- the store's claims --------------------------------------------------------------------------


def test_a_sample_is_granted_to_one_holder_at_a_time(store_url):
    store = Store(store_url)
    first, second = Holder.this_process("run-1"), Holder.this_process("run-2")

    assert store.claim(STEP, keys(4), first, 60) == keys(4)
    assert store.claim(STEP, keys(6), second, 60) == keys(6)[4:]
    assert store.claim(STEP, keys(4), first, 60) == keys(4), "a holder may claim its own again"

    store.release(keys(2), first)
    assert store.claim(STEP, keys(4), second, 60) == keys(2)


def test_finished_samples_are_never_granted_and_lose_their_claim(store_url):
    store = Store(store_url)
    holder = Holder.this_process("run-1")
    store.claim(STEP, keys(3), holder, 60)
    compute(store, a_step_run(store), keys(2))

    assert set(store.claim_holders(keys(3))) == {keys(3)[2]}
    assert store.claim(STEP, keys(3), Holder.this_process("run-2"), 60) == []
    assert store.claim(STEP, keys(3), holder, 60) == [keys(3)[2]]


def test_an_expired_lease_can_be_claimed_by_another_holder(store_url):
    store = Store(store_url)
    dead, alive = Holder.this_process("run-dead"), Holder.this_process("run-alive")
    store.claim(STEP, keys(2), dead, 0.2)
    assert store.claim(STEP, keys(2), alive, 60) == []
    time.sleep(0.3)
    assert store.claim(STEP, keys(2), alive, 60) == keys(2)
    assert store.renew(keys(2), dead, 60) == [], "a lapsed claim taken by another is not renewed"


def test_a_killed_process_on_this_host_holds_nothing_even_before_its_lease_lapses(store_url):
    """A run resumed after a SIGKILL must not wait out the dead run's leases."""
    import socket

    store = Store(store_url)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Holder(
        id="dead", run_id="01DEAD", pid=gone.pid, host=socket.gethostname(), since=_since()
    )
    store.claim(STEP, keys(2), dead, 600)

    assert store.claim_holders(keys(2)) == {}
    assert store.claim(STEP, keys(2), Holder.this_process("01RESUME"), 60) == keys(2)


def test_renewing_keeps_a_claim_alive(store_url):
    store = Store(store_url)
    holder, other = Holder.this_process("run-1"), Holder.this_process("run-2")
    store.claim(STEP, keys(2), holder, 0.3)
    for _ in range(3):
        time.sleep(0.15)
        assert store.renew(keys(2), holder, 0.3) == keys(2)
    assert store.claim(STEP, keys(2), other, 60) == []


def test_the_holder_says_which_run_process_and_host_since_when(store_url):
    store = Store(store_url)
    holder = Holder.this_process("01RUN")
    store.claim(STEP, keys(1), holder, 60)

    (found,) = store.claim_holders(keys(1)).values()

    assert found == holder
    description = found.describe()
    assert description.startswith(f"run 01RUN by pid {holder.pid} on host {holder.host} since ")
    assert description.endswith(" UTC")


# -- ClaimedWork ---------------------------------------------------------------------------------


def test_two_workers_split_a_step_and_each_sample_is_computed_once(store_url):
    computed: list[str] = []
    finished_elsewhere: dict[str, list[str]] = {}

    def worker(name: str) -> None:
        store = Store(store_url)
        step_run = a_step_run(store, name)
        with ClaimedWork(store, STEP, run_id=name, poll_seconds=0.05) as work:
            for batch in work.batches(keys(60), 4):
                computed.extend(batch)
                time.sleep(0.01)
                compute(store, step_run, batch)
                work.done(batch)
        finished_elsewhere[name] = work.finished_elsewhere
        store.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(computed) == Counter(keys(60)), "each sample exactly once"
    store = Store(store_url)
    assert set(store.finished(keys(60))) == set(keys(60))
    assert store.claim_holders(keys(60)) == {}, "no claim outlives its work"


def test_a_worker_waits_for_a_live_holder_and_serves_its_results(store_url, caplog):
    store = Store(store_url)
    other = Holder(id="other", run_id="01OTHER", pid=4242, host="elsewhere", since=_since())
    store.claim(STEP, keys(3), other, 60)

    def other_finishes() -> None:
        time.sleep(0.4)
        compute(store, a_step_run(store), keys(3))

    finisher = threading.Thread(target=other_finishes)
    finisher.start()
    with (
        caplog.at_level(logging.WARNING, logger="ecap"),
        ClaimedWork(store, STEP, run_id="01ME", poll_seconds=0.05) as work,
    ):
        batches = list(work.batches(keys(5), 10))
    finisher.join()

    assert batches == [keys(5)[3:]]
    assert sorted(work.finished_elsewhere) == keys(3)
    busy = [r.getMessage() for r in caplog.records if "store busy" in r.getMessage()]
    assert len(busy) == 1
    assert busy[0].startswith(
        "store busy: run 01OTHER by pid 4242 on host elsewhere since 2026-01-02 03:04:05 UTC"
    )


def test_waiting_in_an_event_loop_does_not_block_it(store_url):
    import asyncio

    store = Store(store_url)
    store.claim(STEP, keys(2), Holder.this_process("01OTHER"), 60)
    ticks: list[float] = []

    async def other_finishes() -> None:
        for _ in range(8):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)
        compute(store, a_step_run(store), keys(2))

    async def worker() -> list[list[str]]:
        with ClaimedWork(store, STEP, run_id="01ME", poll_seconds=0.05) as work:
            return [batch async for batch in work.abatches(keys(3), 10)]

    async def both() -> list[list[str]]:
        batches, _ = await asyncio.gather(worker(), other_finishes())
        return batches

    assert asyncio.run(both()) == [keys(3)[2:]]
    assert len(ticks) == 8


def test_a_dead_holders_samples_go_to_the_next_worker_when_its_lease_lapses(store_url):
    store = Store(store_url)
    store.claim(STEP, keys(4), Holder.this_process("01DEAD"), 0.5)  # then the holder "dies"

    started = time.monotonic()
    with ClaimedWork(store, STEP, run_id="01NEXT", poll_seconds=0.05) as work:
        done = [key for batch in work.batches(keys(4), 10) for key in batch]

    assert done == keys(4)
    assert time.monotonic() - started >= 0.3
    assert work.finished_elsewhere == []


def test_a_long_batch_keeps_its_claims_through_the_heartbeat(store_url):
    store = Store(store_url)
    with ClaimedWork(store, STEP, run_id="01SLOW", lease_seconds=0.3) as work:
        (batch,) = list(work.batches(keys(2), 10))
        time.sleep(0.8)  # well past the lease: only renewals keep the claims
        assert store.claim(STEP, keys(2), Holder.this_process("01OTHER"), 60) == []
        work.done(batch)
    assert store.claim_holders(keys(2)) == {}


def test_leaving_early_releases_what_was_not_done(store_url):
    store = Store(store_url)
    with ClaimedWork(store, STEP, run_id="01QUIT") as work:
        next(work.batches(keys(3), 10))
    assert store.claim(STEP, keys(3), Holder.this_process("01NEXT"), 60) == keys(3)


def _since():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# -- processes ------------------------------------------------------------------------------------

WORKER = """
import json, sys, time
from ecap.claims import ClaimedWork
from ecap.store import Store
sys.path.insert(0, sys.argv[3])
from test_concurrent_runs import STEP, a_step_run, compute, keys
store = Store(sys.argv[1])
step_run = a_step_run(store, "proc")
with ClaimedWork(store, STEP, run_id="proc", poll_seconds=0.05) as work:
    for batch in work.batches(keys(int(sys.argv[2])), 5):
        print(json.dumps(batch), flush=True)
        time.sleep(0.01)
        compute(store, step_run, batch)
        work.done(batch)
"""


def _workers(url: str, count: int, samples: int) -> list[str]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(samples), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    return [key for out, _ in outputs for line in out.splitlines() for key in json.loads(line)]


def test_two_processes_on_sqlite_split_the_work(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    computed = _workers(url, 2, 200)
    assert Counter(computed) == Counter(keys(200))


@pytest.mark.postgres
def test_four_processes_on_postgres_split_the_work(store_url):
    if not store_url.startswith("postgresql"):
        pytest.skip("the PostgreSQL variant")
    computed = _workers(store_url, 4, 200)
    assert Counter(computed) == Counter(keys(200))


# -- whole runs ----------------------------------------------------------------------------------

RUN_WITH_FAKES = """
import sys
from ecap.cli import main
from ecap.plugins import set_registry
from ecap.testing import registry_with_fakes
set_registry(registry_with_fakes())
main(sys.argv[1:])
"""


def _concurrent_runs(tmp_path: Path, store: str, count: int, template: str) -> list[str]:
    """Start ``count`` runs of one spec (a CSV source and a fake captioner that logs every
    sample it is given) at once on ``store``; returns the pairs the captioner was given."""
    csv_file = make_pairs(tmp_path, 24)
    history = tmp_path / f"calls-{template}.jsonl"
    spec = tmp_path / f"spec-{template}.yaml"
    spec.write_text(
        f"store: {store}\n"
        "steps:\n"
        f"  pairs: {{source: csv, with: {{path: {csv_file}}}, batch_size: 4}}\n"
        "  captions:\n"
        "    caption: fake\n"
        "    from: pairs\n"
        "    batch_size: 2\n"
        f"    with: {{delay: 0.1, history_file: {history}, template: '{template} {{category}}'}}\n"
    )
    script = tmp_path / "run.py"
    script.write_text(RUN_WITH_FAKES)
    command = [sys.executable, str(script), "pipeline", "run", str(spec), "--no-progress"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert "Traceback" not in err and "UNIQUE" not in err and "aborted" not in err, err
    return [json.loads(line)["pair"] for line in history.read_text().splitlines()]


def test_two_runs_on_sqlite_both_finish_without_lock_or_unique_errors(tmp_path):
    captioned = _concurrent_runs(tmp_path, f"sqlite:///{tmp_path / 'ecap.db'}", 2, "first")
    assert len(set(captioned)) == 24
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}", read_only=True)
    assert [run["status"] for run in store.runs()] == ["complete", "complete"]


def test_two_runs_on_sqlite_caption_each_pair_once(tmp_path):
    captioned = _concurrent_runs(tmp_path, f"sqlite:///{tmp_path / 'ecap.db'}", 2, "first")
    assert len(set(captioned)) == 24
    assert Counter(captioned).most_common(1)[0][1] == 1, "a pair was captioned twice"


@pytest.mark.postgres
def test_four_runs_on_postgres_caption_each_pair_once_on_a_new_and_an_existing_store(
    store_url, tmp_path
):
    if not store_url.startswith("postgresql"):
        pytest.skip("the PostgreSQL variant")
    for template in ("first", "second"):  # a new database, then the same one with new work
        captioned = _concurrent_runs(tmp_path, store_url, 4, template)
        assert len(set(captioned)) == 24
        assert Counter(captioned).most_common(1)[0][1] == 1, "a pair was captioned twice"
