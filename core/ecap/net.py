"""Whether an address is this machine: keys may be left out for a loopback server, and a page
served beyond loopback deserves a warning."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(url: str | None) -> bool:
    """Whether ``url`` names a server on this machine."""
    return is_loopback_host(urlparse(url).hostname if url else None)


__all__ = ["is_loopback", "is_loopback_host"]
