"""The call log: every model or API call a plugin makes, as a row of ``api_calls``.

Plugins that pay per call (hosted judges and captioners) ask the log before calling and write to it
as soon as an answer arrives. A step killed after two of an instruction's three judge calls
therefore re-sends only the third, and a re-run bills nothing twice. Batch jobs are written as
``submitted`` (with their job id) before anything polls them.

Each answer is its own transaction, except inside :meth:`CallLog.grouped`: there, the answers that
arrive in one turn of the event loop are written together at the end of that turn, before the loop
does anything else. A busy judge (150 calls a second) gets many answers a turn and would otherwise
spend more CPU on commits than on anything else of its own; an idle one writes each answer alone,
as soon as it arrives.

An answer the plugin found unusable is ``error`` (never served: the call is made again) or, when
the request was deterministic (greedy decoding) and asking again would pay for the same answer,
``rejected``: served like an answer, so the plugin rejects it again without a call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .hashing import digest
from .records import new_id, utcnow
from .secrets import scrub, scrub_data

if TYPE_CHECKING:  # plugins import this module at load time; SQLAlchemy waits for first use
    from .store import Store


@dataclass(frozen=True)
class CallRecord:
    request_hash: str
    status: str
    response: dict[str, Any] | None
    batch_job_id: str | None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None


#: Statuses :meth:`CallLog.lookup` serves, best first.
RANKS = {"ok": 0, "rejected": 1, "submitted": 2}


def request_hash(provider: str, model: str, request: Any) -> str:
    """Identity of a request: provider, model and the request's semantic content."""
    return digest("call", provider, model, request)


class CallLog:
    def __init__(self, store: Store, step_run_id: str | None) -> None:
        self.store = store
        self.step_run_id = step_run_id
        self._writer: Any = None
        self._grouping = 0  # open grouped() blocks
        self._pending: list[dict[str, Any]] = []
        self._flush_soon: asyncio.Handle | None = None

    @contextlib.contextmanager
    def grouped(self) -> Iterator[None]:
        """Inside, answers recorded from a running event loop in one turn of it are written
        together at the end of that turn, and what is left when the block ends. Blocks may be
        open at once (concurrent batches)."""
        self._grouping += 1
        try:
            yield
        finally:
            self._grouping -= 1
            self.flush()

    def flush(self) -> None:
        """Write the answers waiting in a :meth:`grouped` block, in one transaction."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        rows, self._pending = self._pending, []
        if rows:
            try:
                self._insert(rows)
            except BaseException:
                self._pending[:0] = rows  # kept for the next flush
                raise

    def lookup(self, request_hashes: list[str]) -> dict[str, CallRecord]:
        """The most useful row per hash: an answer (``ok``) wins over a kept rejected answer
        (``rejected``), which wins over a ``submitted`` batch request; errors are never served
        (the call is made again)."""
        from sqlalchemy import select

        from .store.schema import ApiCall

        self.flush()
        found: dict[str, CallRecord] = {}
        with self.store.engine.connect() as conn:
            for start in range(0, len(request_hashes), 500):
                chunk = request_hashes[start : start + 500]
                rows = conn.execute(
                    select(ApiCall)
                    .where(ApiCall.request_hash.in_(chunk), ApiCall.status.in_(RANKS))
                    .order_by(ApiCall.id)
                ).mappings()
                for row in rows:
                    current = found.get(row["request_hash"])
                    if current is None or RANKS[row["status"]] <= RANKS[current.status]:
                        found[row["request_hash"]] = CallRecord(
                            row["request_hash"],
                            row["status"],
                            row["response"],
                            row["batch_job_id"],
                            row["tokens_in"],
                            row["tokens_out"],
                            row["cost"],
                        )
        return found

    def record(
        self,
        request_hash: str,
        *,
        provider: str,
        model: str,
        status: str,
        response: dict[str, Any] | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost: float | None = None,
        latency_ms: float | None = None,
        batch_job_id: str | None = None,
        error: str | None = None,
    ) -> None:
        row = {
            "id": new_id(),
            "request_hash": request_hash,
            "provider": provider,
            "model": model,
            "status": status,
            "response": scrub_data(response),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "latency_ms": latency_ms,
            "batch_job_id": batch_job_id,
            "error": scrub(error) if error else error,
            "step_run_id": self.step_run_id,
            "created_at": utcnow(),
        }
        loop = _running_loop() if self._grouping else None
        if loop is None:
            self._insert([row])
            return
        self._pending.append(row)
        if self._flush_soon is None:
            self._flush_soon = loop.call_soon(self.flush)  # after this turn's other callbacks

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        from sqlalchemy import insert

        from .store.schema import ApiCall

        with self._writes().begin() as conn:
            # Parameters passed beside the statement, not baked into it with ``values()``: the
            # compiled INSERT is then cached once instead of rebuilt for every call.
            conn.execute(insert(ApiCall), rows)

    def _writes(self) -> Any:
        """The store's engine for a transaction that writes (``BEGIN IMMEDIATE`` on SQLite: it
        waits for the write lock up front rather than failing when another writer holds it);
        made once, as making it costs more than a small insert."""
        if self._writer is None:
            from .store.connect import writer

            self._writer = writer(self.store.engine)
        return self._writer

    def mark_error(self, request_hash: str, error: str, *, keep: bool = False) -> None:
        """An answer that turned out unusable: kept for the audit and never served again, or,
        with ``keep`` (a deterministic request: asking again would give the same answer), served
        again as ``rejected`` so that the plugin fails it again without paying for it."""
        from sqlalchemy import update

        from .store.schema import ApiCall

        self.flush()
        with self._writes().begin() as conn:
            conn.execute(
                update(ApiCall)
                .where(ApiCall.request_hash == request_hash, ApiCall.status == "ok")
                .values(status="rejected" if keep else "error", error=scrub(error))
            )

    def complete_submitted(self, request_hash: str, batch_job_id: str, **answer: Any) -> None:
        """Turn a ``submitted`` batch request into its answer (``status`` ok or error)."""
        from sqlalchemy import update

        from .store.schema import ApiCall

        self.flush()
        with self._writes().begin() as conn:
            conn.execute(
                update(ApiCall)
                .where(
                    ApiCall.request_hash == request_hash,
                    ApiCall.batch_job_id == batch_job_id,
                    ApiCall.status == "submitted",
                )
                .values(**scrub_data(answer))
            )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
