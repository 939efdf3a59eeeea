"""Splitting one step's samples between the processes that share a store.

Two runs of the same spec, two specs sharing a step, or N workers on one PostgreSQL store all
compute the samples that are not finished yet. :class:`ClaimedWork` makes them cooperate instead
of collide: each batch a process computes is claimed first (:meth:`ecap.store.Store.claim`), so
no sample is computed (or paid for) twice; samples another process holds are waited for and then
read from the store. A claim is a lease: a heartbeat renews it while its holder lives, and it
lapses when the holder is killed, so the samples of a dead process go to the next one.

The runner uses it like this (``abatches`` is the same for an event loop; take the next batch
only when a worker is free to compute it, so that the other processes get the rest)::

    with ClaimedWork(store, step_key, run_id=run_id) as work:
        for keys in work.batches(todo_cache_keys, batch_size):
            ...compute the samples of ``keys`` and store.save_batch(...) them...
            work.done(keys)
    served = store.finished(work.finished_elsewhere)  # computed by the other processes
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from types import TracebackType

from .store import Store
from .store.store import Holder

LOGGER = logging.getLogger("ecap.claims")

#: How many samples to claim next: a number, or a callable asked before each batch.
BatchSize = int | Callable[[], int]


class ClaimedWork:
    """One process's share of one step's samples, claimed batch by batch.

    ``lease_seconds`` is how long a claim survives its holder: a heartbeat renews every claim
    held each third of it, so only a dead (or frozen) holder loses its samples. ``poll_seconds``
    is how often a process waiting for samples another holds looks again.
    """

    def __init__(
        self,
        store: Store,
        step_key: str,
        *,
        run_id: str | None,
        lease_seconds: float = 120.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store, self.step_key = store, step_key
        self.holder = Holder.this_process(run_id)
        self.lease_seconds, self.poll_seconds = lease_seconds, poll_seconds
        #: Cache keys other processes finished while this one waited: read them from the store.
        self.finished_elsewhere: list[str] = []
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._announced: set[str] = set()

    def __enter__(self) -> ClaimedWork:
        self._heartbeat = threading.Thread(
            target=self._renew_until_stopped, name=f"ecap-claims-{self.holder.id}", daemon=True
        )
        self._heartbeat.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            left = sorted(self._held)
            self._held.clear()
        if not left:
            return
        try:  # unfinished work goes back to the others now, not when the lease lapses
            self.store.release(left, self.holder)
        except Exception as error:  # never hide the exception that is leaving the block
            LOGGER.warning(f"could not release {len(left)} claims ({error}); they lapse instead")

    def batches(self, cache_keys: Sequence[str], size: BatchSize) -> Iterator[list[str]]:
        """Batches of at most ``size`` keys that this process now holds, until every key is
        either computed here or finished by another process (those end up in
        :attr:`finished_elsewhere`). Call :meth:`done` once a batch is saved. Claims are taken
        one batch at a time, as the caller asks for the next, so other processes get the rest.
        ``size`` may be a callable, asked before each batch (the runner grows the batches of
        steps whose plugin is quick)."""
        for batch in self._schedule(cache_keys, size):
            if batch is None:
                time.sleep(self.poll_seconds)
            else:
                yield batch

    async def abatches(
        self, cache_keys: Sequence[str], size: BatchSize
    ) -> AsyncIterator[list[str]]:
        """:meth:`batches` for an event loop: waiting for others does not block it."""
        for batch in self._schedule(cache_keys, size):
            if batch is None:
                await asyncio.sleep(self.poll_seconds)
            else:
                yield batch

    def done(self, cache_keys: Sequence[str], saved: Collection[str] = ()) -> None:
        """This process is through with ``cache_keys``. Those in ``saved`` lost their claim in
        the transaction that saved their result (:meth:`ecap.store.Store.save_batch`); the
        others (failed, pending, or never computed) are released for another process to try.
        A batch whose samples were all saved costs no transaction here."""
        with self._lock:
            self._held.difference_update(cache_keys)
        left = [key for key in cache_keys if key not in saved]
        if left:
            self.store.release(left, self.holder)

    def _schedule(self, cache_keys: Sequence[str], size: BatchSize) -> Iterator[list[str] | None]:
        """Batches granted to this process, or ``None`` where every key left is held by another
        live process and the caller should wait ``poll_seconds`` before looking again."""
        queue = deque(dict.fromkeys(cache_keys))
        held_elsewhere: list[str] = []
        while queue or held_elsewhere:
            if not queue:
                held_elsewhere = self._not_finished(held_elsewhere)
                holders = self.store.claim_holders(held_elsewhere) if held_elsewhere else {}
                if held_elsewhere and len(holders) == len(held_elsewhere):
                    self._announce(holders)
                    yield None
                    continue
                queue.extend(held_elsewhere)  # released, or their holder's lease lapsed
                held_elsewhere = []
                continue
            wanted = size() if callable(size) else size
            window = [queue.popleft() for _ in range(min(wanted, len(queue)))]
            granted = self.store.claim(self.step_key, window, self.holder, self.lease_seconds)
            if granted:
                with self._lock:
                    self._held.update(granted)
                yield granted
            mine = set(granted)
            held_elsewhere.extend(self._not_finished([k for k in window if k not in mine]))

    def _not_finished(self, keys: list[str]) -> list[str]:
        """``keys`` less those another process finished (kept in :attr:`finished_elsewhere`)."""
        if not keys:
            return []
        finished = self.store.finished(keys)
        self.finished_elsewhere.extend(key for key in keys if key in finished)
        return [key for key in keys if key not in finished]

    def _announce(self, holders: dict[str, Holder]) -> None:
        """Say once per holder who keeps this process waiting, and for how many samples."""
        counts: dict[str, tuple[Holder, int]] = {}
        for holder in holders.values():
            counts[holder.id] = (holder, counts.get(holder.id, (holder, 0))[1] + 1)
        for holder_id, (holder, count) in counts.items():
            if holder_id in self._announced:
                continue
            self._announced.add(holder_id)
            LOGGER.warning(
                f"store busy: {holder.describe()}; waiting for the {count} samples it is "
                "computing, then serving them from the store",
                extra={"fields": {"step_key": self.step_key, "samples": count}},
            )

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self._renew()
            except Exception as exc:  # the next beat tries again; the lease has slack for it
                LOGGER.warning(f"could not renew claims: {exc}")

    def _renew(self) -> None:
        with self._lock:
            held = sorted(self._held)
        if not held:
            return
        kept = set(self.store.renew(held, self.holder, self.lease_seconds))
        lost = [key for key in held if key not in kept]
        if lost:  # a sample saved but not yet marked done has no claim either: that is no loss
            finished = self.store.finished(lost)
            lost = [key for key in lost if key not in finished]
        if lost:
            LOGGER.warning(
                f"{len(lost)} claimed samples lapsed to another process (this one was stalled "
                f"for longer than the {self.lease_seconds:.0f} s lease); whichever finishes "
                "first keeps its result",
                extra={"fields": {"step_key": self.step_key, "samples": len(lost)}},
            )
