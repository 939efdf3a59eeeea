"""Staying under a provider's rate limits: pace calls smoothly, and learn the limit from answers.

A judge run at the paper's scale (450K calls) is bound by the provider's requests a minute, not by
its latency. Sending as fast as the concurrency allows and retrying the 429s wastes the budget on
refusals and, against a sliding window, can lock a client out for a whole minute. So every call
an LLM judge makes first takes a slot from its :class:`Pacer` (through :class:`PacedCaller`;
any plugin that calls a hosted model can do the same):

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
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..remote import RemoteCaller, RemotePolicy, Retryable

T = TypeVar("T")

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


def refused(signal: RateSignal, error: BaseException, pacer: Pacer | None) -> RateLimited:
    """The :class:`RateLimited` to raise for an SDK's 429 ``error``, told to ``pacer`` first."""
    if pacer is not None:
        pacer.observe(signal)
    return RateLimited(str(error), signal)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a duration written like ``1s``, ``6m0s``, ``250ms``, ``1.5s`` or ``43s``
    (OpenAI's reset headers, Google's ``retryDelay``); ``None`` when it is not one."""
    if not text:
        return None
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        return None
    return sum(float(amount) * _UNIT[unit] for amount, unit in parts)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def header_signal(headers: Mapping[str, str] | None, *, refused: bool = False) -> RateSignal:
    """OpenAI's rate-limit headers (other OpenAI-compatible servers send some or none)."""
    headers = headers or {}
    wait = None
    if (value := _number(headers.get("retry-after-ms"))) is not None:
        wait = value / 1000
    elif (value := _number(headers.get("retry-after"))) is not None:
        wait = value
    return RateSignal(
        requests_per_minute=_number(headers.get("x-ratelimit-limit-requests")),
        tokens_per_minute=_number(headers.get("x-ratelimit-limit-tokens")),
        wait=wait,
        refused=refused,
    )


def google_signal(error: Any) -> RateSignal:
    """A Google API 429 body (``{"error": {"details": [...]}}`` or the ``error`` object): the
    per-minute quota from ``QuotaFailure`` and the wait from ``RetryInfo``."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    details = error.get("details") if isinstance(error, dict) else None
    requests = tokens = wait = None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("RetryInfo"):
            wait = parse_duration(detail.get("retryDelay"))
        elif kind.endswith("QuotaFailure"):
            for violation in detail.get("violations") or []:
                quota = str(violation.get("quotaId", ""))
                value = _number(violation.get("quotaValue"))
                if "PerMinute" not in quota or value is None:
                    continue
                if "Token" in quota:
                    tokens = value if tokens is None else min(tokens, value)
                else:
                    requests = value if requests is None else min(requests, value)
    return RateSignal(requests, tokens, wait, refused=True)


class Pacer:
    """Smooth pacing under a requests and a tokens budget, adapted from what the provider says
    (see the module docstring); used by :class:`PacedCaller` in place of
    :class:`ecap.remote.RateLimiter`, whose buckets start full (a burst of a minute's budget).
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


class PacedCaller(RemoteCaller):
    """A :class:`~ecap.remote.RemoteCaller` whose calls start at a :class:`Pacer`'s pace (the
    same concurrency limit, retries and call log otherwise). Give the same pacer to the provider
    that reads the answers, so that what they say reaches it."""

    def __init__(self, policy: RemotePolicy, pacer: Pacer | None = None) -> None:
        super().__init__(policy)
        self.pacer = pacer or Pacer(policy.requests_per_minute, policy.tokens_per_minute)
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


__all__ = [
    "HEADROOM",
    "PacedCaller",
    "Pacer",
    "RateLimited",
    "RateSignal",
    "google_signal",
    "header_signal",
    "parse_duration",
    "refused",
]
