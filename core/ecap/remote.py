"""Calling a remote model: concurrency and rate limits, retries, and what counts as transient.

Every plugin that pays for calls over the network (LLM judges, API captioners, an OpenAI-compatible
server) follows the same rules, so they live here once, free of any SDK:

- at most ``max_concurrent_calls`` calls are in flight, within ``requests_per_minute`` and
  ``tokens_per_minute`` (two continuously refilled buckets);
- a transient failure (:class:`Retryable`, or a timeout) is retried with exponential backoff and
  jitter, waiting at least what the server's Retry-After asked; a waiting call holds no slot;
- anything else propagates at once: a bad request does not get better by repeating it.

A provider classifies its SDK's exceptions with :func:`is_transport_error`, :data:`RETRY_STATUS`
and :func:`retry_after` and raises :class:`Retryable`; the :class:`RemoteCaller` does the rest.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ecap.interfaces import PluginConfig, transport_field

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
    are made on first use, inside the event loop that runs the calls."""

    def __init__(self, policy: RemotePolicy) -> None:
        self.policy = policy
        self._gate: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None

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
        if self._gate is None or self._limiter is None:
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
    "Retryable",
    "is_transport_error",
    "retry_after",
]
