"""The garbage collector while a per-sample step runs (``ecap.execution.StepCollector``).

A step keeps every item it makes until it ends, so the runner sets those aside from the
collector's passes (frozen) batch by batch. What a batch leaves as garbage must still be
collected by the end of that batch, never set aside with the rest: a model plugin's garbage may
hold accelerator memory. After the step the interpreter's settings are back as they were.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence

from ecap.records import Item
from ecap.store import Store
from ecap.testing import FakeCaptioner, make_pairs, run_spec


class Cycle:
    """An object that only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_each_batch_garbage_is_collected_and_what_the_step_keeps_is_set_aside(
    write_spec, ecap_registry, tmp_path, monkeypatch
):
    seen: list[tuple[bool, int]] = []  # per batch: last batch's cycle freed?, objects frozen
    last: list[weakref.ref[Cycle]] = []
    caption = FakeCaptioner.caption

    def leaving_a_cycle(self: FakeCaptioner, batch: Sequence[Item]) -> list:
        if last:
            seen.append((last[-1]() is None, gc.get_freeze_count()))
        garbage = Cycle()
        last.append(weakref.ref(garbage))
        del garbage  # unreachable now, but refcounting cannot free it
        return caption(self, batch)

    monkeypatch.setattr(FakeCaptioner, "caption", leaving_a_cycle)
    threshold = gc.get_threshold()
    spec = write_spec(
        f"""
        steps:
          pairs: {{source: csv, with: {{path: {make_pairs(tmp_path, 24)}}}}}
          captions: {{caption: fake, from: pairs, batch_size: 8}}
        """
    )

    result = run_spec(spec)

    assert result.status == "complete" and result.steps["captions"].counts["done"] == 24
    assert len(seen) == 2
    assert all(freed for freed, _ in seen), "a batch's garbage was set aside, not collected"
    assert seen[1][1] > seen[0][1] > 0, "the batches' items were not set aside as they came"
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold


def test_a_process_that_froze_objects_itself_keeps_them_frozen(write_spec, ecap_registry, tmp_path):
    gc.freeze()
    try:
        spec = write_spec(
            f"""
            steps:
              pairs: {{source: csv, with: {{path: {make_pairs(tmp_path, 4)}}}}}
              captions: {{caption: fake, from: pairs}}
            """
        )
        assert run_spec(spec).status == "complete"
        assert gc.get_freeze_count() > 0, "the step unfroze what it had not frozen"
    finally:
        gc.unfreeze()


def test_reading_back_a_cached_step_leaves_the_collector_as_it_was_even_when_it_fails(
    write_spec, ecap_registry, tmp_path, monkeypatch
):
    spec = write_spec(
        f"""
        steps:
          pairs: {{source: csv, with: {{path: {make_pairs(tmp_path, 4)}}}}}
        """
    )
    assert run_spec(spec).status == "complete"

    def broken(self: Store, refs: object) -> list[Item]:
        assert not gc.isenabled(), "the store read its records with passes running"
        raise OSError("disk went away")

    monkeypatch.setattr(Store, "hydrate", broken)
    result = run_spec(spec)

    assert result.status == "failed" and "disk went away" in result.steps["pairs"].error
    assert gc.isenabled() and gc.get_freeze_count() == 0
