"""Staying under a provider's rate limits: pace calls smoothly, and learn the limit from answers.

A judge run at the paper's scale (450K calls) is bound by the provider's requests a minute, not by
its latency. Sending as fast as the concurrency allows and retrying the 429s wastes the budget on
refusals and, against a sliding window, can lock a client out for a whole minute. So every call
a judge or an API captioner makes first takes a slot from its :class:`Pacer`:

- **Configured** (``requests_per_minute`` / ``tokens_per_minute`` in the plugin's config,
  transport fields: changing them never invalidates a cached answer): calls start one every
  ``60 / requests_per_minute`` seconds, never in a burst. A client that spends its whole minute
  at t=0 is refused by any server that counts over a sliding window, so there is no burst
  allowance; the pace is :data:`HEADROOM` of the limit, so that the network's jitter does not
  push one call too many into a window.
- **Learned**: the limit the provider states is taken as the limit when it is lower or none is
  configured: OpenAI's ``x-ratelimit-limit-requests`` / ``-tokens`` headers (on every answer), a
  Gemini 429's ``QuotaFailure`` (its per-minute ``quotaValue``).
- **Refused anyway** (a 429): every call waits what the server asked (``retry-after``,
  ``retry-after-ms``, Gemini's ``RetryInfo``; one second otherwise) before the next starts, and
  the pace drops to 90 % of what it was; each answered call then gives back a little of it.
  Without any stated limit, the pace starts at half the rate calls were going out at when the
  first 429 came.

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

from ..remote import RateLimiter, RemoteCaller, RemotePolicy, Retryable

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
#: The span, in seconds, over which the send rate is measured when a 429 comes without a limit.
RATE_SPAN = 10.0


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


class Pacer(RateLimiter):
    """Smooth pacing under a requests and a tokens budget, adapted from what the provider says
    (see the module docstring). Plugs into :class:`ecap.remote.RemoteCaller` in place of its
    bucket limiter (see :class:`PacedCaller`); holds no asyncio object, so it outlives event
    loops."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        super().__init__(requests_per_minute, tokens_per_minute)
        self.configured = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self.stated: dict[str, float | None] = {"requests": None, "tokens": None}
        #: Share of the limit to pace at; lowered by refusals.
        self.share = HEADROOM
        #: Requests a minute probed for when a server refuses without stating a limit.
        self.probe: float | None = None
        self.paused_until = 0.0
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
                while self._sent[0] < start - RATE_SPAN:
                    self._sent.popleft()
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
        if signal.refused:
            self._refused(signal.wait, slow_down=was_known)
        else:
            self.share = min(HEADROOM, self.share + RECOVER)
            if self.probe is not None and self.limit("requests") is None:
                self.probe += PROBE_STEP

    def _refused(self, wait: float | None, *, slow_down: bool) -> None:
        """Pause every call for ``wait``; lower the pace of a known limit (``slow_down``: the
        refusal came although calls were paced at it), or probe for an unknown one."""
        now = time.monotonic()
        self.refusals += 1
        paused = now < self.paused_until  # one burst of refusals slows the pace once
        self.paused_until = max(self.paused_until, now + (wait or DEFAULT_WAIT))
        self._next = dict.fromkeys(self._next, self.paused_until)
        self._epoch += 1
        if paused:
            return
        if self.limit("requests") is not None:
            if slow_down:
                self.share *= SLOW_DOWN
        else:
            self.probe = (self.probe or self._recent_rate(now)) * (SLOW_DOWN if self.probe else 0.5)

    def _recent_rate(self, now: float) -> float:
        """Requests a minute started over the last :data:`RATE_SPAN` seconds."""
        while self._sent and self._sent[0] < now - RATE_SPAN:
            self._sent.popleft()
        span = max(1.0, now - self._sent[0]) if self._sent else RATE_SPAN
        return max(1.0, len(self._sent) * 60 / span)


class PacedCaller(RemoteCaller):
    """A :class:`~ecap.remote.RemoteCaller` whose calls take their slots from a :class:`Pacer`
    (the same limits, retries and call log otherwise). Give the same pacer to the provider that
    reads the answers, so that what they say reaches it."""

    def __init__(self, policy: RemotePolicy, pacer: Pacer | None = None) -> None:
        super().__init__(policy)
        self.pacer = pacer or Pacer(policy.requests_per_minute, policy.tokens_per_minute)

    async def call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        estimated_tokens: int = 0,
        tokens_of: Callable[[T], int] | None = None,
    ) -> tuple[T, float]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # RemoteCaller makes its concurrency gate and its limiter per event loop; the limiter
            # here is the pacer, which belongs to no loop and keeps what it learned.
            self._loop, self._limiter = loop, self.pacer
            self._gate = asyncio.Semaphore(self.policy.max_concurrent_calls)
        return await super().call(send, estimated_tokens=estimated_tokens, tokens_of=tokens_of)


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
