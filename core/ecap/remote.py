"""Calling a remote model: concurrency and rate limits, retries, and what counts as transient.

Every plugin that pays for calls over the network (LLM judges, API captioners, an OpenAI-compatible
server) follows the same rules, so they live here once, free of any SDK and of any provider:

- at most ``max_concurrent_calls`` calls are in flight, within ``requests_per_minute`` and
  ``tokens_per_minute`` (two continuously refilled buckets);
- a transient failure (:class:`Retryable`, or a timeout) is retried with exponential backoff and
  jitter, waiting at least what the server's Retry-After asked; a waiting call holds no slot;
- anything else propagates at once: a bad request does not get better by repeating it.

A provider classifies its SDK's exceptions with :func:`transient_failures` (or
:func:`is_transport_error`, :data:`RETRY_STATUS` and :func:`retry_after`) and raises
:class:`Retryable`; the :class:`RemoteCaller` does the rest. :meth:`RemoteCaller.logged` adds the
store's call log around a call: serve a recorded answer, else call, price and record at once.
What each provider sends and answers (clients, messages, the shape of a reply) is in
:mod:`ecap.providers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ecap.interfaces import PluginConfig, transport_field

if TYPE_CHECKING:
    from ecap.calls import CallLog, CallRecord

T = TypeVar("T")

#: HTTP statuses worth another try: timeouts, conflicts, rate limits and server errors.
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_TRANSPORT_ERRORS = {
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "ConnectError",
    "RemoteProtocolError",
    "ReadError",
    "APIConnectionError",
    "APITimeoutError",
}


class Retryable(Exception):
    """A transient failure; ``after`` is the wait in seconds the server asked for, if any."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


def is_transport_error(exc: BaseException) -> bool:
    """Connection drops, timeouts and garbled bodies, whichever HTTP library raised them."""
    if isinstance(exc, json.JSONDecodeError | ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSPORT_ERRORS for cls in type(exc).__mro__)


def retry_after(response: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds only) headers, if any."""
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None


@contextlib.contextmanager
def transient_failures(
    status_error: type[BaseException], status_of: Callable[[Any], int | None]
) -> Iterator[None]:
    """Turn an SDK's transient failures into :class:`Retryable`: its status errors with a
    status in :data:`RETRY_STATUS` (with the server's Retry-After), and transport errors.
    Anything else propagates unchanged."""
    try:
        yield
    except status_error as exc:
        if status_of(exc) in RETRY_STATUS:
            raise Retryable(str(exc), retry_after(getattr(exc, "response", None))) from exc
        raise
    except Exception as exc:
        if is_transport_error(exc):
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        raise


class RemotePolicy(PluginConfig):
    """The transport settings of a plugin that calls a remote model. None of them is in the
    cache key: tuning throughput never invalidates a result."""

    max_concurrent_calls: int = transport_field(16, ge=1)
    requests_per_minute: float | None = transport_field(None, gt=0)
    tokens_per_minute: float | None = transport_field(None, gt=0)
    timeout: float = transport_field(120.0, gt=0, description="seconds per call")
    max_attempts: int = transport_field(6, ge=1, description="tries per call, the first included")
    backoff: float = transport_field(1.0, ge=0, description="first retry delay, doubled each time")
    max_backoff: float = transport_field(60.0, ge=0)
    input_price: float | None = transport_field(None, ge=0, description="USD per 1M input tokens")
    output_price: float | None = transport_field(None, ge=0, description="USD per 1M output tokens")

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """USD for one call at the configured prices (0 when none are set)."""
        price_in, price_out = self.input_price or 0.0, self.output_price or 0.0
        return (tokens_in * price_in + tokens_out * price_out) / 1e6


def unset_if_empty(value: Any) -> Any:
    """``${env:X:-}`` gives an empty string: that means "not set" (e.g. the SDK's default), for
    an API key or a URL alike. Used by every remote plugin's validators."""
    return None if value == "" else value


def estimate_tokens(text_chars: int, images: int, max_output_tokens: int) -> int:
    """Rough tokens of one call, for the tokens-per-minute budget before the real count is known:
    4 characters a token, about 800 tokens an image, and the longest answer allowed."""
    return text_chars // 4 + 800 * images + max_output_tokens


@dataclass(frozen=True)
class Reply:
    """One answer from a remote model, provider-neutral. ``reasoning`` is thinking text the server
    returned apart from the answer; ``tokens_out`` counts thinking tokens too (they are billed)."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    served_model: str | None = None
    reasoning: str | None = None

    def as_response(self) -> dict[str, Any]:
        """What the call log stores as the call's response."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "served_model": self.served_model,
            "reasoning": self.reasoning,
        }

    @classmethod
    def from_record(cls, record: CallRecord) -> Reply:
        response = record.response or {}
        return cls(
            text=response.get("text", ""),
            tokens_in=record.tokens_in or 0,
            tokens_out=record.tokens_out or 0,
            finish_reason=response.get("finish_reason"),
            served_model=response.get("served_model"),
            reasoning=response.get("reasoning"),
        )


class RateLimiter:
    """Requests and tokens per minute, as two continuously refilled buckets."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.limits = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self.level = {k: float(v or 0) for k, v in self.limits.items()}
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        need = {"requests": 1.0, "tokens": float(tokens)}
        async with self.lock:
            while True:
                now = time.monotonic()
                for kind, limit in self.limits.items():
                    if limit:
                        self.level[kind] = min(
                            limit, self.level[kind] + (now - self.stamp) * limit / 60
                        )
                self.stamp = now
                waits = [
                    (min(need[k], limit) - self.level[k]) * 60 / limit
                    for k, limit in self.limits.items()
                    if limit
                ]
                wait = max([0.0, *waits])
                if wait <= 0:
                    for kind, limit in self.limits.items():
                        if limit:
                            self.level[kind] -= need[kind]
                    return
                await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        """Charge the difference between a call's estimated and actual tokens."""
        if self.limits["tokens"]:
            self.level["tokens"] -= actual - estimated


class RemoteCaller:
    """Runs calls under one :class:`RemotePolicy`. Create it anywhere; its semaphore and lock
    are made on first use inside each event loop that runs calls."""

    def __init__(self, policy: RemotePolicy) -> None:
        self.policy = policy
        self._gate: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        estimated_tokens: int = 0,
        tokens_of: Callable[[T], int] | None = None,
    ) -> tuple[T, float]:
        """``send()`` under the limits, retried while it fails transiently.

        Returns its result and the latency of the successful attempt in milliseconds. The last
        transient failure is raised once ``max_attempts`` are spent.
        """
        loop = asyncio.get_running_loop()
        if self._gate is None or self._limiter is None or self._loop is not loop:
            # Made per event loop: asyncio primitives belong to the loop that first waits on them.
            self._loop = loop
            self._gate = asyncio.Semaphore(self.policy.max_concurrent_calls)
            self._limiter = RateLimiter(
                self.policy.requests_per_minute, self.policy.tokens_per_minute
            )
        policy = self.policy
        for attempt in range(policy.max_attempts):
            await self._limiter.acquire(estimated_tokens)
            async with self._gate:
                started = time.monotonic()
                try:
                    result = await asyncio.wait_for(send(), policy.timeout + 5)
                except (Retryable, TimeoutError) as exc:
                    if attempt + 1 == policy.max_attempts:
                        raise
                    delay = self.delay(attempt, exc.after if isinstance(exc, Retryable) else None)
                else:
                    if tokens_of is not None:
                        self._limiter.settle(estimated_tokens, tokens_of(result))
                    return result, (time.monotonic() - started) * 1000
            await asyncio.sleep(delay)  # outside the gate: a waiting call holds no slot
        raise AssertionError("unreachable: max_attempts >= 1")

    async def logged(
        self,
        calls: CallLog | None,
        key: str,
        recorded: CallRecord | None,
        *,
        provider: str,
        model: str,
        send: Callable[[], Awaitable[Reply]],
        estimated_tokens: int,
        accept: Callable[[Reply], T],
        rejects: tuple[type[Exception], ...] = (),
        attempts: int = 1,
        on_call: Callable[[Reply, float], None] | None = None,
    ) -> tuple[T, bool]:
        """Serve ``key`` from the call log, else call and record: the rule every paid call follows.

        ``recorded`` (from one :meth:`ecap.calls.CallLog.lookup` per batch) is served when it is
        an answer (``ok``) or a deterministic answer kept after its rejection (``rejected``):
        ``accept`` judges it again, without a call. Otherwise ``send`` runs under the limits and
        retries, the answer is priced and handed to ``on_call`` (reply, cost), then ``accept``-ed;
        an answer ``accept`` refuses with one of ``rejects`` is logged as an error and asked again,
        up to ``attempts`` times, after which that refusal is raised. Accepted answers are logged
        ``ok`` the moment they arrive. Returns ``accept``'s value and whether it was served from
        the log.
        """
        if recorded is not None and recorded.status in ("ok", "rejected") and recorded.response:
            return accept(Reply.from_record(recorded)), True
        for attempt in range(attempts):
            reply, latency = await self.call(
                send,
                estimated_tokens=estimated_tokens,
                tokens_of=lambda r: r.tokens_in + r.tokens_out,
            )
            cost = self.policy.cost(reply.tokens_in, reply.tokens_out)
            if on_call is not None:
                on_call(reply, cost)
            record: dict[str, Any] = {
                "provider": provider,
                "model": model,
                "response": reply.as_response(),
                "tokens_in": reply.tokens_in,
                "tokens_out": reply.tokens_out,
                "cost": cost,
                "latency_ms": latency,
            }
            try:
                value = accept(reply)
            except rejects as exc:
                if calls is not None:
                    calls.record(key, status="error", error=str(exc), **record)
                if attempt + 1 == attempts:
                    raise
                continue
            if calls is not None:
                calls.record(key, status="ok", **record)
            return value, False
        raise AssertionError("unreachable: attempts >= 1")

    def delay(self, attempt: int, hint: float | None) -> float:
        """Exponential backoff with up to 25% jitter, never shorter than the server's hint."""
        backoff = min(self.policy.max_backoff, self.policy.backoff * 2**attempt)
        backoff *= 1 + random.uniform(0, 0.25)
        return max(backoff, hint or 0.0)


__all__ = [
    "RETRY_STATUS",
    "RateLimiter",
    "RemoteCaller",
    "RemotePolicy",
    "Reply",
    "Retryable",
    "estimate_tokens",
    "is_transport_error",
    "retry_after",
    "unset_if_empty",
]
