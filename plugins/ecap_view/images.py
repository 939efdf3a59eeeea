"""Which file an image request may read: only the one a stored pair points to.

A request names a pair id and a side (``source`` or ``target``), never a path. The path comes from
that pair's :class:`~ecap.records.ImageRef` in the store, so the page can only ever read files the
store's pairs point to; ids that are not a pair's, remote URLs (the server fetches nothing) and
relative paths (they would depend on where the server was started) are refused, and so is a file
whose bytes no longer hash to the sha256 recorded at import (another file under the old name).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecap.images import mime_type
from ecap.records import ImageRef, Pair
from ecap.store import Store

SIDES = ("source", "target")
_PAIR_ID = re.compile(r"^[0-9a-f]{64}$")


class ImageRefused(Exception):
    """Why an image request is not served, with the HTTP status that says so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    mime: str


def local_path(ref: ImageRef) -> Path:
    """The absolute local path of a stored image reference, or :class:`ImageRefused`."""
    uri = ref.uri
    if uri.startswith("file://"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
    elif "://" in uri:
        raise ImageRefused(404, f"the image is remote ({uri}); this page serves local files only")
    else:
        path = Path(uri)
    if not path.is_absolute():
        raise ImageRefused(404, f"the image path {uri} is relative; it cannot be located")
    return path


def pair_image(store: Store, pair_id: str, side: str) -> ServedImage:
    """The bytes of one side of a stored pair, checked against the hash stored with it."""
    if side not in SIDES or not _PAIR_ID.match(pair_id):
        raise ImageRefused(404, "no such image: ask for /image/<pair id>/source or /target")
    pair = store.record("pair", pair_id)
    if not isinstance(pair, Pair):
        raise ImageRefused(404, f"no pair {pair_id} in this store")
    ref: ImageRef = getattr(pair, side)
    path = local_path(ref)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageRefused(404, f"cannot read {path}: {exc.strerror}") from exc
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ImageRefused(409, f"{path} changed on disk since the pair was imported")
    return ServedImage(data, mime_type(ref))
