"""Answers recorded in one turn of the event loop share a transaction, and none is lost or
written twice: the call log still serves every one of them."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from ecap.calls import CallLog
from ecap.store import Store
from ecap.store.schema import ApiCall


def rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ApiCall)).scalar_one())


def answer(calls: CallLog, key: str) -> None:
    calls.record(key, provider="p", model="m", status="ok", response={"text": key})


def test_answers_of_one_turn_are_written_at_its_end_and_served_at_once(ecap_store: Store) -> None:
    calls = CallLog(ecap_store, None)

    async def three_answers_then_a_lookup() -> None:
        with calls.grouped():
            for key in ("a", "b", "c"):
                answer(calls, key)
            assert rows(ecap_store) == 0, "not yet: the turn has not ended"
            await asyncio.sleep(0)  # the turn ends
            assert rows(ecap_store) == 3
            answer(calls, "d")
            assert set(calls.lookup(["a", "b", "c", "d"])) == {"a", "b", "c", "d"}

    asyncio.run(three_answers_then_a_lookup())
    assert rows(ecap_store) == 4, "each answer written exactly once"


def test_what_is_pending_when_the_block_ends_is_written(ecap_store: Store) -> None:
    calls = CallLog(ecap_store, None)

    async def leave_with_answers_pending() -> None:
        with calls.grouped():
            answer(calls, "a")
            answer(calls, "b")

    asyncio.run(leave_with_answers_pending())
    assert rows(ecap_store) == 2


def test_outside_a_loop_or_a_block_each_answer_is_written_at_once(ecap_store: Store) -> None:
    calls = CallLog(ecap_store, None)
    answer(calls, "a")
    assert rows(ecap_store) == 1
    with calls.grouped():  # no event loop runs here
        answer(calls, "b")
        assert rows(ecap_store) == 2
