"""Rate limits as hosted APIs enforce them: N requests a minute, refused with 429 beyond that.

The window is sliding: a model call is admitted while fewer than ``budget`` calls were admitted in
the last ``window`` seconds, where ``budget = requests_per_minute x window / 60``. With the default
``window`` of 60 s that is exactly "N a minute": a client that sends its whole minute at once is
served, and then refused until the first of those calls is a minute old. A shorter window is how
OpenAI documents its enforcement ("60,000 requests a minute may be enforced as 1,000 a second")
and keeps tests short: 120 a minute over a 5 s window admits 10 calls in any 5 seconds. Refused
calls do not count against the window. Each provider (``gemini``, ``openai``) has its own window.

What a client sees, as the real services send it:

- OpenAI: every chat completion (answered or refused) carries ``x-ratelimit-limit-requests`` (the
  per-minute limit), ``x-ratelimit-remaining-requests`` (calls the window admits right now) and
  ``x-ratelimit-reset-requests`` (until the window is empty again, written like ``1s``, ``6m0s``
  or ``250ms``); a refusal is 429 ``rate_limit_exceeded`` with ``retry-after`` (whole seconds,
  rounded up, until the oldest call leaves the window).
- Gemini: no headers; a refusal is 429 ``RESOURCE_EXHAUSTED`` whose ``details`` hold a
  ``QuotaFailure`` (the per-minute quota's id and value), a ``Help`` link and, unless
  ``retry_info`` is off, a ``RetryInfo`` with ``retryDelay`` in whole seconds.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .common import Provider, ServerBase, _new_id, _Reply


@dataclass(frozen=True)
class RateLimit:
    """``requests_per_minute`` over a sliding ``window`` (seconds); see the module docstring."""

    requests_per_minute: float
    window: float = 60.0
    #: Gemini refusals carry a RetryInfo detail (the real service sends one most of the time).
    retry_info: bool = True

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0 or self.window <= 0:
            raise ValueError("requests_per_minute and window must be positive")

    @property
    def budget(self) -> int:
        """Calls admitted in any ``window`` seconds (at least one)."""
        return max(1, math.floor(self.requests_per_minute * self.window / 60 + 1e-9))


@dataclass(frozen=True)
class Admission:
    """The window's verdict on one model call."""

    admitted: bool
    remaining: int  # calls the window admits right now, this one counted
    reset: float  # seconds until the window is empty again
    retry_after: float  # seconds until the oldest call leaves the window (refusals only)


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: ``250ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


class RateLimiting(ServerBase):
    """The per-provider sliding windows, and the 429s and headers they produce."""

    def limit_requests(self, limit: RateLimit | None) -> None:
        """Enforce ``limit`` on online model calls from now on (``None``: no limit). Windows
        start empty."""
        with self._lock:
            self.rate_limit = limit
            self._windows.clear()

    def rate_limited(self, provider: Provider | None = None) -> int:
        """Model calls refused with 429 because they were over the rate limit."""
        with self._lock:
            return sum(n for p, n in self._refusals.items() if provider in (None, p))

    def _admit(self, provider: Provider) -> Admission | None:
        """Count one model call against ``provider``'s window (``None`` when there is no
        limit)."""
        limit = self.rate_limit
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault(provider, deque())
            while window and window[0] <= now - limit.window:
                window.popleft()
            admitted = len(window) < limit.budget
            if admitted:
                window.append(now)
            else:
                self._refusals[provider] = self._refusals.get(provider, 0) + 1
            return Admission(
                admitted=admitted,
                remaining=limit.budget - len(window),
                reset=window[-1] + limit.window - now if window else 0.0,
                retry_after=window[0] + limit.window - now if not admitted else 0.0,
            )

    def _limit_headers(self, provider: Provider, admission: Admission) -> dict[str, str]:
        """What OpenAI sends with every chat completion; Gemini sends none."""
        if provider != "openai" or self.rate_limit is None:
            return {}
        return {
            "x-ratelimit-limit-requests": f"{self.rate_limit.requests_per_minute:g}",
            "x-ratelimit-remaining-requests": str(admission.remaining),
            "x-ratelimit-reset-requests": duration(admission.reset),
        }

    def _refusal(self, provider: Provider, model: str, admission: Admission) -> _Reply:
        """The 429 a call over the limit gets, in ``provider``'s shape."""
        assert self.rate_limit is not None
        limit = self.rate_limit
        wait = max(1, math.ceil(admission.retry_after))
        headers = self._limit_headers(provider, admission)
        if provider == "openai":
            headers["retry-after"] = str(wait)
            headers["x-request-id"] = "req_" + _new_id(24)
            message = (
                f"Rate limit reached for {model} in organization org-fake on requests per min "
                f"(RPM): Limit {limit.requests_per_minute:g}, Used {limit.budget}, Requested 1. "
                f"Please try again in {duration(admission.retry_after)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
            error: dict[str, Any] = {
                "message": message,
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        else:
            details: list[dict[str, Any]] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": f"{limit.requests_per_minute:g}",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
            ]
            if limit.retry_info:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}
                )
            error = {
                "code": 429,
                "message": "You exceeded your current quota, please check your plan and billing "
                f"details. Please retry in {admission.retry_after:.1f}s.",
                "status": "RESOURCE_EXHAUSTED",
                "details": details,
            }
        return _Reply(
            429, json.dumps({"error": error}).encode(), headers=headers, fault="rate_limit"
        )


__all__ = ["Admission", "RateLimit", "RateLimiting", "duration"]
