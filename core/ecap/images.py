"""Reading images that pairs reference, from disk or by URL. Images never enter the store."""

from __future__ import annotations

import mimetypes
import urllib.request
from pathlib import Path

from .records import ImageRef

URL_SCHEMES = ("http://", "https://", "file://")


class ImageReadError(OSError):
    """An image that cannot be read from where its reference points."""


def read_bytes(location: str, timeout: float = 30.0) -> bytes:
    """The bytes at a local path or an http(s)/file URL."""
    if location.startswith(URL_SCHEMES):
        try:
            with urllib.request.urlopen(location, timeout=timeout) as response:
                return response.read()
        except OSError as exc:
            raise ImageReadError(f"cannot download {location}: {exc}") from exc
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read image {location}: {exc.strerror}") from exc


def mime_type(ref: ImageRef) -> str:
    if ref.format:
        return f"image/{ref.format.lower()}"
    guessed, _ = mimetypes.guess_type(ref.uri)
    return guessed or "image/png"
