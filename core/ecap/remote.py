"""Calling a remote model: concurrency, pacing within rate limits, retries, what is transient.

Every plugin that pays for calls over the network (LLM judges, API captioners, an OpenAI-compatible
server) runs them through one loop, :meth:`RemoteCaller.call`, free of any SDK and of any provider:

- a call takes one of ``max_concurrent_calls`` slots, then waits for its start time from the
  caller's :class:`Pacer` (smooth pacing within ``requests_per_minute`` and ``tokens_per_minute``
  and within what the provider states or its 429s reveal; see below);
- a transient failure (:class:`Retryable`, or a timeout) is retried with exponential backoff and
  jitter, waiting at least what the server's Retry-After asked; a waiting call holds no slot;
- anything else propagates at once: a bad request does not get better by repeating it.

A provider classifies its SDK's exceptions with :func:`transient_failures` (or
:func:`is_transport_error`, :data:`RETRY_STATUS` and :func:`retry_after`) and raises
:class:`Retryable`, or :class:`RateLimited` for a 429, and tells the caller's
:attr:`RemoteCaller.pacer` what each answer and refusal said about the limits
(:mod:`ecap.providers.limits` reads OpenAI's headers and Gemini's quota details); the
:class:`RemoteCaller` does the rest. :meth:`RemoteCaller.logged` adds the store's call log around
a call: serve a recorded answer, else call, price and record at once. What each provider sends
and answers (clients, messages, the shape of a reply) is in :mod:`ecap.providers`.

**Pacing.** A judge run at the paper's scale (450K calls) is bound by the provider's requests a
minute, not by its latency. Sending as fast as the concurrency allows and retrying the 429s
wastes the budget on refusals and, against a sliding window, can lock a client out for a whole
minute. So every call first takes a start time from its caller's :class:`Pacer`:

- **Configured** (``requests_per_minute`` / ``tokens_per_minute`` in the plugin's config,
  transport fields: changing them never invalidates a cached answer): calls start one every
  ``60 / requests_per_minute`` seconds, never in a burst: a client that spends its whole minute
  at t=0 is refused by a server that counts over a sliding window until that burst has left the
  window, so there is no burst allowance. The pace is :data:`HEADROOM` of the limit, so that
  timing jitter does not push one call too many into a window.
- **Learned**: the limit the provider states is taken as the limit when it is lower or none is
  configured: OpenAI's ``x-ratelimit-limit-requests`` / ``-tokens`` headers (on every answer), a
  Gemini 429's ``QuotaFailure`` (its per-minute ``quotaValue``).
  When a limit becomes known mid-run, the calls already sent in the last minute count against
  it (a server's window still holds them).
- **Refused anyway** (a 429) although paced at a known limit: the pace drops to 90 % of what it
  was (once per burst of refusals) and each answered call gives a little back; the refused call
  waits what the server asked (``retry-after``, ``retry-after-ms``, Gemini's ``RetryInfo``).
  Refused while sending unpaced: the quota is spent for now, so every call waits that long (one
  second when the server does not say); without any stated limit, the pace starts at half the
  rate calls were going out at, and drops by 10 % with each later burst of refusals.

One pacer serves one plugin instance in one process: with several workers, configure each with
its share of the limit (or let each learn it from the 429s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
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

#: The share of a known limit calls are paced at: leaves room for timing jitter.
HEADROOM = 0.98
#: After a 429, the pace drops to this share of what it was ...
SLOW_DOWN = 0.9
#: ... and each answered call adds this share of the limit back, up to :data:`HEADROOM`.
RECOVER = 0.001
#: Requests a minute each answered call adds to a probed pace: about +10 % a minute at any pace.
PROBE_STEP = 0.1
#: Seconds to pause after a 429 that says nothing about when to come back.
DEFAULT_WAIT = 1.0
#: Seconds of sent calls remembered: a per-minute quota's window.
RATE_SPAN = 60.0


class Retryable(Exception):
    """A transient failure; ``after`` is the wait in seconds the server asked for, if any."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class RateSignal:
    """What one answer or refusal said about the provider's limits (``None``: not stated)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    #: Seconds the server asked the client to wait (refusals).
    wait: float | None = None
    refused: bool = False


class RateLimited(Retryable):
    """A call refused for the provider's rate limit (429), with what the refusal said."""

    def __init__(self, message: str, signal: RateSignal) -> None:
        super().__init__(message, signal.wait)
        self.signal = signal


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


class Pacer:
    """Smooth pacing under a requests and a tokens budget, adapted from what the provider says
    (see **Pacing** in the module docstring): the start times of a :class:`RemoteCaller`'s calls.
    Holds no asyncio object, so it outlives event loops and keeps what it learned."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.configured = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self.stated: dict[str, float | None] = {"requests": None, "tokens": None}
        #: Share of the limit to pace at; lowered by refusals.
        self.share = HEADROOM
        #: Requests a minute probed for when a server refuses without stating a limit.
        self.probe: float | None = None
        self.paused_until = 0.0
        self._calm_until = 0.0  # refusals before this belong to the last burst
        self.refusals = 0
        self._next = {"requests": 0.0, "tokens": 0.0}  # when the next call may start, per budget
        self._epoch = 0  # bumped by each refusal: slots promised before it are void
        self._sent: deque[float] = deque()

    def limit(self, kind: str) -> float | None:
        """The known limit (a minute) of ``kind`` (requests or tokens): the lower of configured
        and stated."""
        known = [v for v in (self.configured[kind], self.stated[kind]) if v]
        return min(known) if known else None

    @property
    def pace(self) -> float | None:
        """Requests a minute calls start at now (``None``: as fast as the concurrency allows)."""
        limit = self.limit("requests")
        return limit * self.share if limit else self.probe

    def _spacing(self, kind: str, amount: float) -> float:
        """Seconds ``amount`` of ``kind`` takes out of its budget at the current pace."""
        if kind == "requests":
            pace = self.pace
        else:
            limit = self.limit("tokens")
            pace = limit * self.share if limit else None
        return amount * 60 / pace if pace else 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait for this call's slot: after the previous call's by the pace, after any pause."""
        while True:
            now = time.monotonic()
            start = max(now, self.paused_until, *self._next.values())
            self._next["requests"] = start + self._spacing("requests", 1)
            self._next["tokens"] = start + self._spacing("tokens", tokens)
            epoch = self._epoch
            if start > now:
                await asyncio.sleep(start - now)
            if epoch == self._epoch:  # no refusal while waiting
                self._sent.append(start)
                self._forget_before(start - RATE_SPAN)
                return

    def settle(self, estimated: int, actual: int) -> None:
        """Move the tokens budget by what the call really used (its estimate was charged)."""
        self._next["tokens"] += self._spacing("tokens", actual - estimated)

    def observe(self, signal: RateSignal) -> None:
        """Take in what an answer (its headers) or a refusal said."""
        was_known = self.limit("requests") is not None
        for kind, stated in (
            ("requests", signal.requests_per_minute),
            ("tokens", signal.tokens_per_minute),
        ):
            if stated:
                self.stated[kind] = stated
        now = time.monotonic()
        if not was_known and self.limit("requests") is not None:
            self._owe_recent(now)
        if signal.refused:
            self._refused(now, signal.wait or DEFAULT_WAIT, paced=was_known)
        else:
            self.share = min(HEADROOM, self.share + RECOVER)
            if self.probe is not None and self.limit("requests") is None:
                self.probe += PROBE_STEP

    def _owe_recent(self, now: float) -> None:
        """A limit just became known: the calls of the last minute, sent before it was, count
        against it. The next call starts no earlier than the oldest of them plus their number
        times the spacing, as if they had been paced (a server's window still holds them)."""
        self._forget_before(now - RATE_SPAN)
        if self._sent:
            owed = self._sent[0] + len(self._sent) * self._spacing("requests", 1)
            self._next["requests"] = max(now, owed)
            self._epoch += 1  # slots promised at the old pace are void

    def _refused(self, now: float, wait: float, *, paced: bool) -> None:
        """A 429. Calls ``paced`` at a known limit went a little too fast (timing, or another
        client on the same quota): the pace drops and the refused call alone waits ``wait``.
        Calls sent unpaced have spent the quota for now: every call waits ``wait``, and without
        a known limit the pace is probed for. A burst of refusals counts once."""
        self.refusals += 1
        burst = now < self._calm_until
        self._calm_until = max(self._calm_until, now + wait)
        if paced:
            if not burst:
                self.share *= SLOW_DOWN
            return
        self.paused_until = max(self.paused_until, now + wait)
        self._next = {kind: max(at, self.paused_until) for kind, at in self._next.items()}
        self._epoch += 1
        if self.limit("requests") is None and not burst:
            self.probe = self.probe * SLOW_DOWN if self.probe else self._recent_rate(now) / 2

    def _forget_before(self, moment: float) -> None:
        while self._sent and self._sent[0] < moment:
            self._sent.popleft()

    def _recent_rate(self, now: float) -> float:
        """Requests a minute started over the last :data:`RATE_SPAN` seconds."""
        self._forget_before(now - RATE_SPAN)
        span = max(1.0, now - self._sent[0]) if self._sent else RATE_SPAN
        return max(1.0, len(self._sent) * 60 / span)


class RemoteCaller:
    """Runs calls under one :class:`RemotePolicy`, at its :attr:`pacer`'s pace. Create it
    anywhere; its concurrency slots are made on first use inside each event loop that runs calls,
    while the pacer (and what it learned) outlives the loops."""

    def __init__(self, policy: RemotePolicy) -> None:
        self.policy = policy
        #: Start times within the limits. Give it to the provider that reads the answers, so that
        #: what they say about the limits (headers, 429s) reaches it.
        self.pacer = Pacer(policy.requests_per_minute, policy.tokens_per_minute)
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    async def call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        estimated_tokens: int = 0,
        tokens_of: Callable[[T], int] | None = None,
    ) -> tuple[T, float]:
        """``send()`` in a concurrency slot, at its start time, retried while it fails
        transiently; returns its result and the successful attempt's latency in milliseconds.
        The last transient failure is raised once ``max_attempts`` are spent.

        The slot comes first, then the start time: calls queued for a slot have been promised
        nothing, so when a 429 pauses or slows the pace, they all keep to it. (The other way
        round, every call queued behind the slots would have passed while nothing was known
        and be refused in one burst.) The wait for a start time is not part of the timeout."""
        policy = self.policy
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # asyncio objects are per loop
            self._slots = (loop, asyncio.Semaphore(policy.max_concurrent_calls))
        slots = self._slots[1]
        for attempt in range(policy.max_attempts):
            async with slots:
                await self.pacer.acquire(estimated_tokens)
                started = time.monotonic()
                try:
                    result = await asyncio.wait_for(send(), policy.timeout + 5)
                except (Retryable, TimeoutError) as exc:
                    if attempt + 1 == policy.max_attempts:
                        raise
                    delay = self.delay(attempt, exc.after if isinstance(exc, Retryable) else None)
                else:
                    if tokens_of is not None:
                        self.pacer.settle(estimated_tokens, tokens_of(result))
                    return result, (time.monotonic() - started) * 1000
            await asyncio.sleep(delay)  # a call waiting to retry holds no slot
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
    "HEADROOM",
    "RETRY_STATUS",
    "Pacer",
    "RateLimited",
    "RateSignal",
    "RemoteCaller",
    "RemotePolicy",
    "Reply",
    "Retryable",
    "estimate_tokens",
    "is_transport_error",
    "retry_after",
    "unset_if_empty",
]
