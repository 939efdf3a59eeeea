"""What providers say about their rate limits, read as :class:`ecap.remote.RateSignal`.

The pacing itself is provider-neutral and lives in :mod:`ecap.remote` (:class:`~ecap.remote.Pacer`,
used by every :class:`~ecap.remote.RemoteCaller`: the judges' and the API captioners' alike).
Here the providers' own forms are read: OpenAI's ``x-ratelimit-*`` and ``retry-after(-ms)``
headers (:func:`header_signal`, on every answer and every 429) and a Google 429's
``QuotaFailure`` and ``RetryInfo`` details (:func:`google_signal`); :func:`refused` turns a 429
into the :class:`~ecap.remote.RateLimited` the caller retries, after telling the pacer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..remote import Pacer, RateLimited, RateSignal


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


__all__ = ["google_signal", "header_signal", "parse_duration", "refused"]
