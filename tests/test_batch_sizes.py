"""How many samples a per-sample step takes per batch, and what each batch costs in the store.

A ``batch_size`` the spec sets is kept. Left unset, a step whose plugin returns quickly (no model
work: a source reading small files, a no-op captioner) doubles its batches up to a limit, so that
it commits in a few large transactions; a step whose batches are slow keeps the default. Whether a
batch counts as quick is patched here rather than timed, so these tests never depend on the
machine's speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ecap import execution
from ecap.claims import ClaimedWork
from ecap.store import Store
from ecap.store.schema import Claim
from ecap.store.store import CompletedSample
from ecap.testing import FakeCaptioner, make_pairs, run_spec


def caption_spec(write_spec, csv: Path, options: str = "") -> Path:
    return write_spec(
        f"""
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}}}
          captions: {{caption: fake, from: pairs{options}}}
        """
    )


def test_an_unset_batch_size_doubles_while_the_plugin_is_quick(
    write_spec, ecap_registry, tmp_path, monkeypatch
):
    monkeypatch.setattr(execution, "QUICK_BATCH_SECONDS", float("inf"))
    monkeypatch.setattr(execution, "GROWN_BATCH_LIMIT", 64)
    csv = make_pairs(tmp_path, 200)
    result = run_spec(caption_spec(write_spec, csv))
    assert result.status == "complete" and result.steps["captions"].counts["done"] == 200
    assert [len(batch) for batch in FakeCaptioner.calls] == [16, 32, 64, 64, 24]


def test_a_slow_plugin_keeps_the_default_batch_size(
    write_spec, ecap_registry, tmp_path, monkeypatch
):
    monkeypatch.setattr(execution, "QUICK_BATCH_SECONDS", 0.0)
    csv = make_pairs(tmp_path, 40)
    run_spec(caption_spec(write_spec, csv))
    assert [len(batch) for batch in FakeCaptioner.calls] == [16, 16, 8]


def test_a_batch_size_the_spec_sets_is_kept_however_quick_the_plugin(
    write_spec, ecap_registry, tmp_path, monkeypatch
):
    monkeypatch.setattr(execution, "QUICK_BATCH_SECONDS", float("inf"))
    csv = make_pairs(tmp_path, 20)
    run_spec(caption_spec(write_spec, csv, ", batch_size: 8"))
    assert [len(batch) for batch in FakeCaptioner.calls] == [8, 8, 4]


def test_a_coroutine_plugins_batches_do_not_grow(write_spec, ecap_registry, tmp_path, monkeypatch):
    """``concurrency`` counts a coroutine plugin's batches in flight: growing them would change
    how many requests a judge has out at once."""
    from ecap.testing import FakeJudge

    monkeypatch.setattr(execution, "QUICK_BATCH_SECONDS", float("inf"))
    csv = make_pairs(tmp_path, 40)
    spec = write_spec(
        f"""
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}}}
          judged: {{judge: fake, from: pairs}}
        """
    )
    assert run_spec(spec).status == "complete"
    assert sorted(len(batch) for batch in FakeJudge.calls) == [8, 16, 16]


def test_failed_samples_still_go_back_to_the_other_workers_and_saved_ones_cost_no_release(
    tmp_path, monkeypatch
):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    released: list[list[str]] = []
    release = store.release
    monkeypatch.setattr(
        store, "release", lambda keys, holder: (released.append(list(keys)), release(keys, holder))
    )
    with ClaimedWork(store, "step", run_id=None) as work:
        (batch,) = list(work.batches(["a", "b", "c"], 3))
        store.save_batch("run", "step", "s", [CompletedSample("a", "a", [])], [], [])
        work.done(batch, saved={"a"})
        with store.engine.connect() as conn:
            assert conn.execute(select(Claim.cache_key)).scalars().all() == []
        (again,) = list(work.batches(["d"], 1))
        store.save_batch("run", "step", "s", [CompletedSample("d", "d", [])], [], [])
        work.done(again, saved={"d"})
    assert released == [["b", "c"]]


@pytest.mark.parametrize("size", [1, 2])
def test_claims_follow_a_size_that_changes_between_batches(tmp_path, size):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    sizes = iter([size, 2 * size, 4 * size, 100])
    with ClaimedWork(store, "step", run_id=None) as work:
        batches = list(work.batches([str(i) for i in range(20)], lambda: next(sizes)))
        for batch in batches:
            work.done(batch)
    expected = [size, 2 * size, 4 * size]
    expected.append(20 - sum(expected))
    assert [len(b) for b in batches] == expected
    assert [key for b in batches for key in b] == [str(i) for i in range(20)]
