"""Faults a test injects into online model calls: error statuses, slow, truncated or malformed
answers, and dropped connections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .common import LLMError, LLMReply, LLMRequest, Provider, _Reply, chatty
from .ratelimit import RateLimiting

FAULTS = ("slow", "truncated", "malformed", "disconnect")


@dataclass(frozen=True)
class Fault:
    """A queued fault; see :meth:`FakeLLMServer.inject`."""

    kind: int | str
    retry_after: float | None = None
    seconds: float = 5.0
    text: str | None = None
    message: str | None = None
    provider: Provider | None = None

    @property
    def name(self) -> str:
        return str(self.kind)


class FaultInjection(RateLimiting):
    """The fault queue, and the online model call that applies the rate limit, the next fault
    and the latency."""

    def inject(
        self,
        fault: int | str,
        *,
        retry_after: float | None = None,
        seconds: float = 5.0,
        text: str | None = None,
        message: str | None = None,
        times: int = 1,
        provider: Provider | None = None,
    ) -> None:
        """Queue a fault for the next online model call(s), consumed one per call in order.

        ``fault`` is an HTTP status (e.g. 429, 500, 502, 503, 400: an error body in the provider's
        shape; ``retry_after`` adds ``Retry-After`` (and ``retry-after-ms`` and Google's
        ``RetryInfo``)), or one of ``"slow"`` (wait ``seconds``, then answer normally),
        ``"truncated"`` (200 whose JSON body is cut in the middle), ``"malformed"`` (200 whose
        answer text is ``text`` or the real answer wrapped in prose and a code fence), or
        ``"disconnect"`` (promise a body, send half, close the connection). ``provider`` restricts
        the fault to one provider's calls; ``times`` queues it repeatedly."""
        if isinstance(fault, bool) or not (
            (isinstance(fault, int) and 400 <= fault <= 599) or fault in FAULTS
        ):
            raise ValueError(
                f"unknown fault {fault!r}: use an HTTP status 400-599 or one of {FAULTS}"
            )
        if provider not in (None, "gemini", "openai"):
            raise ValueError(f"unknown provider {provider!r}")
        item = Fault(fault, retry_after, seconds, text, message, provider)
        with self._lock:
            self._faults.extend([item] * times)

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def fault_count(self, provider: Provider | None = None, fault: int | str | None = None) -> int:
        """Model calls that took an injected fault (of one kind, or any)."""
        with self._lock:
            return sum(
                n
                for (p, f), n in self._fault_counts.items()
                if provider in (None, p) and (fault is None or str(fault) == f)
            )

    def _take_fault(self, provider: Provider) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.provider in (None, provider):
                    del self._faults[index]
                    key = (provider, fault.name)
                    self._fault_counts[key] = self._fault_counts.get(key, 0) + 1
                    record = getattr(self._local, "record", None)
                    if record is not None:
                        record.fault = fault.name  # visible while a slow call still sleeps
                    return fault
        return None

    def _model_call(
        self,
        request: LLMRequest,
        render: Callable[[LLMReply], _Reply],
    ) -> _Reply:
        """Apply the rate limit, the next fault and the latency around one online model call. A
        call refused for the rate limit is answered at once and takes no fault."""
        admission = self._admit(request.provider)
        if admission is not None and not admission.admitted:
            return self._refusal(request.provider, request.model, admission)
        out = self._faulted_call(request, render)
        if admission is not None:
            out.headers.update(self._limit_headers(request.provider, admission))
        return out

    def _faulted_call(
        self,
        request: LLMRequest,
        render: Callable[[LLMReply], _Reply],
    ) -> _Reply:
        fault = self._take_fault(request.provider)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if fault is not None and isinstance(fault.kind, int):
                self._closing.wait(self.latency)
                return self._error(
                    request.provider, fault.kind, fault.message, fault.retry_after, fault.name
                )
            try:
                reply = self._respond(request)
            except LLMError as error:
                self._closing.wait(self.latency)
                return self._error(request.provider, error.status, error.message, error.retry_after)
            if fault is not None and fault.kind == "malformed":
                reply.text = fault.text if fault.text is not None else chatty(reply.text)
            delay = self.latency + (
                fault.seconds if fault is not None and fault.kind == "slow" else 0
            )
            self._closing.wait(delay)
            out = render(reply)
            if fault is not None:
                out.fault = fault.name
                if fault.kind == "truncated":
                    out.body = out.body[: max(1, len(out.body) // 2)]
                elif fault.kind == "disconnect":
                    out.disconnect = True
            return out
        finally:
            with self._lock:
                self._in_flight -= 1
