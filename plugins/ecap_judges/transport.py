"""Classifying provider failures: what to retry, and how long the server asked us to wait."""

from __future__ import annotations

import json
from typing import Any

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
TRANSPORT_ERRORS = {
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "ConnectError",
    "RemoteProtocolError",
    "ReadError",
    "APIConnectionError",
    "APITimeoutError",
}


def is_transport_error(exc: BaseException) -> bool:
    """Connection drops, timeouts and garbled bodies, whichever HTTP library raised them."""
    if isinstance(exc, json.JSONDecodeError | ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in TRANSPORT_ERRORS for cls in type(exc).__mro__)


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
