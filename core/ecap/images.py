"""Reading images that pairs reference, from disk or by URL. Images never enter the store.

:func:`prepare_image` is the one way a plugin that shows images to a model (captioners, judges)
reads them, so that the same pair gives the same pixels everywhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import math
import mimetypes
import os
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .records import ImageRef

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: The EXIF tag that says how a camera held the picture.
ORIENTATION = 0x0112

URL_SCHEMES = ("http://", "https://", "file://")

#: Bytes one image may have, by default: far above any real photo, far below what hurts.
MAX_IMAGE_BYTES = 256 * 2**20
#: Redirects a download may follow, by default.
MAX_REDIRECTS = 5
_CHUNK = 1 << 16

T = TypeVar("T")
R = TypeVar("R")


#: Average file size from which reading, hashing and decoding images is worth one thread per
#: core (:func:`across_cores`): measured on 2 cores, 512 px JPEGs (about 100 KiB) took half
#: the time on two threads, while 8 px PNGs took about a third more CPU time and no less wall
#: time.
PARALLEL_IMAGE_BYTES = 16 * 1024


def across_cores(function: Callable[[T], R], values: Sequence[T]) -> list[R]:
    """``[function(v) for v in values]``, computed by one thread per core, each taking a
    contiguous share of ``values``; results in the order of ``values``.

    For work on images: Pillow decodes and ``hashlib`` hashes without holding the GIL (hashlib
    for buffers over 2 KiB), so large images are read, hashed and decoded on every core at once,
    while for tiny ones, where Python's own code is most of the time, threads only hand the GIL
    to each other (see :data:`PARALLEL_IMAGE_BYTES`). One share per thread, not a task per
    image. An exception ``function`` raises is raised here, as the plain loop would.
    """
    workers = min(_cores(), len(values))
    if workers < 2:
        return [function(value) for value in values]
    share = -(-len(values) // workers)
    shares = [values[start : start + share] for start in range(0, len(values), share)]
    done = _pool().map(lambda part: [function(value) for value in part], shares)
    return [result for part in done for result in part]


@functools.cache
def _cores() -> int:
    """The cores this process may run on (its affinity, which a container may narrow)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """One pool for the process, started on first use; its threads end with the process."""
    return ThreadPoolExecutor(_cores(), thread_name_prefix="ecap-images")


class ImageReadError(OSError):
    """An image that cannot be read from where its reference points: the input's fault (a
    missing or special file, a size over the limit, a download that failed or took too long),
    so a sample failure, never a reason to retry a batch."""


def read_bytes(
    location: str,
    timeout: float = 30.0,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_redirects: int = MAX_REDIRECTS,
) -> bytes:
    """The bytes at a local path or an http(s)/file URL, read within bounds.

    A path must name a regular file: a FIFO, a device or a folder is refused without being read
    (opening a FIFO for reading would wait for a writer forever). Nothing over ``max_bytes`` is
    kept. A download gets ``timeout`` seconds in all (connecting, redirects and every byte), not
    per read, so a server that trickles bytes cannot hold a worker; it follows at most
    ``max_redirects`` redirects.
    """
    if location.startswith("file://"):
        location = urllib.request.url2pathname(urllib.parse.urlsplit(location).path)
    elif location.startswith(URL_SCHEMES):
        return _download(location, timeout, max_bytes, max_redirects)
    return _read_file(location, max_bytes)


def _read_file(location: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
        fd = os.open(location, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ImageReadError(f"cannot read image {location}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{location} is not a regular file (a FIFO, device or folder)")
        if info.st_size > max_bytes:
            raise ImageReadError(f"{location}: {info.st_size} bytes is over the {max_bytes} limit")
        data = _read_to_end(fd, min(info.st_size, max_bytes) + 1, max_bytes + 1)
    except OSError as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"cannot read image {location}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageReadError(f"{location}: grew over the {max_bytes} byte limit while read")
    return data


def _read_to_end(fd: int, expected: int, limit: int) -> bytes:
    """At most ``limit`` bytes of ``fd``, asking for ``expected`` first: the size the file had
    when opened, so that no buffer of ``limit`` bytes is set aside for every small image."""
    chunks = [os.read(fd, expected)]
    size = len(chunks[0])
    while chunks[-1] and size < limit:
        chunks.append(os.read(fd, min(_CHUNK, limit - size)))
        size += len(chunks[-1])
    return b"".join(chunks)


def _download(url: str, timeout: float, max_bytes: int, max_redirects: int) -> bytes:
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ImageReadError(f"cannot download {url}: took longer than {timeout:g} s")
        return left

    class _Redirects(urllib.request.HTTPRedirectHandler):
        """Follows at most ``max_redirects``, each within the time left."""

        max_redirections = max_redirects

        def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
            req.timeout = remaining()
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    opener = urllib.request.build_opener(_Redirects)
    try:
        with opener.open(url, timeout=remaining()) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageReadError(
                    f"cannot download {url}: {declared} bytes is over the {max_bytes} limit"
                )
            sock = _socket_of(response)
            chunks: list[bytes] = []
            size = 0
            while True:
                if sock is not None:
                    sock.settimeout(remaining())
                chunk = response.read1(_CHUNK)
                remaining()
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > max_bytes:
                    raise ImageReadError(f"cannot download {url}: over the {max_bytes} byte limit")
                chunks.append(chunk)
    except ImageReadError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageReadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise ImageReadError(f"cannot download {url}: took longer than {timeout:g} s") from exc
        raise ImageReadError(f"cannot download {url}: {exc}") from exc


def _socket_of(response: object) -> socket.socket | None:
    """The socket under an http.client response, to bound each read by the time left."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def mime_type(ref: ImageRef) -> str:
    if ref.format:
        return f"image/{ref.format.lower()}"
    guessed, _ = mimetypes.guess_type(ref.uri)
    return guessed or "image/png"


class ImageChanged(ImageReadError):
    """The file's bytes no longer match the sha256 recorded when the pair was imported."""


@dataclass(frozen=True)
class PreparedImage:
    """An image exactly as a model receives it: encoded bytes, their mime type and sha256."""

    data: bytes = field(repr=False)
    mime: str
    sha256: str

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"

    def decoded(self) -> PILImage.Image:
        """The pixels (already upright and RGB: :func:`prepare_image` made them so)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            return image.convert("RGB")


#: Formats every image API takes as they are.
PASS_THROUGH = ("PNG", "JPEG", "WEBP")


def prepare_image(
    ref: ImageRef, *, max_pixels: int | None = None, max_input_pixels: int = 64_000_000
) -> PreparedImage:
    """The image ``ref`` points at, checked and normalised so that every model sees the same
    pixels, whichever backend or API it sits behind.

    The bytes must hash to ``ref.sha256`` (a file replaced since import would otherwise be
    captioned or judged under the old pair's name). The image is decoded fully (a truncated file
    fails here, not in a server), unless ``ref.decodes_upright`` says the import already did so
    for these very bytes, refused over ``max_input_pixels`` (a decompression bomb), turned
    upright by its EXIF orientation, converted to RGB and scaled down to ``max_pixels`` with its
    aspect kept. An RGB PNG, JPEG or WebP without rotation that needs no scaling is passed on as
    the original bytes (lossless and cheapest); anything else is re-encoded as PNG.
    ``ImageReadError`` (or its subclass :class:`ImageChanged`) says what is wrong.
    """
    data = _read_checked(ref)
    return _prepare_bytes(ref, data, max_pixels, max_input_pixels)


@dataclass(frozen=True)
class DeferredImage:
    """An image ready to send before its pixels are decoded: :func:`prepare_image_deferred`.

    ``image`` is what :func:`prepare_image` returns when the file's header told the truth.
    :meth:`confirm` decodes the pixels, the check still owed, while a model works on ``image``.
    """

    image: PreparedImage
    pending: Callable[[], PreparedImage] | None = field(default=None, repr=False)

    def confirm(self) -> PreparedImage:
        """What :func:`prepare_image` gives for these bytes: ``image``, unless decoding fails
        (``ImageReadError``: a truncated or corrupt file) or finds an EXIF orientation stored
        after the pixels (a PNG's late eXIf chunk), which turns the image and so changes it."""
        return self.pending() if self.pending is not None else self.image


def prepare_image_deferred(
    ref: ImageRef, *, max_pixels: int | None = None, max_input_pixels: int = 64_000_000
) -> DeferredImage:
    """:func:`prepare_image`, leaving the full decode for later where the header allows.

    For an engine that decodes the image anyway (vLLM, transformers): ecap's own decode then
    need not come first, one image after another, but can run while the engine works. The
    bytes are read and checked against ``ref.sha256`` now, and the header (size, mode, format,
    EXIF in the header) is read now; an image that will go as its own bytes is returned with
    the decode pending (nothing pending when ``ref.decodes_upright``: the import decoded these
    bytes, so the engine's decode is the only one), any other is prepared fully now. Whoever
    sends ``image`` must :meth:`~DeferredImage.confirm` it and use the confirmed image's verdict.
    """
    from PIL import Image

    data = _read_checked(ref)
    try:
        with Image.open(io.BytesIO(data)) as image:
            _within_input_limit(ref, image, max_input_pixels)
            kind = image.format or ""
            small = max_pixels is None or image.width * image.height <= max_pixels
            as_is = image.mode == "RGB" and kind in PASS_THROUGH and small
            if as_is and ref.decodes_upright:  # decoded at import: nothing is owed
                return DeferredImage(PreparedImage(data, f"image/{kind.lower()}", ref.sha256))
            if as_is and "exif" not in image.info:
                mime = f"image/{kind.lower()}"
            else:
                return DeferredImage(_prepare_bytes(ref, data, max_pixels, max_input_pixels))
    except ImageReadError:
        raise
    except Exception as exc:  # as in prepare_image: hostile bytes may raise anything
        raise ImageReadError(f"{ref.uri}: not a readable image ({exc})") from exc
    return DeferredImage(
        PreparedImage(data, mime, ref.sha256),
        functools.partial(_prepare_bytes, ref, data, max_pixels, max_input_pixels),
    )


def _read_checked(ref: ImageRef) -> bytes:
    """The bytes ``ref`` points at, which must hash to ``ref.sha256``."""
    data = read_bytes(ref.uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise ImageChanged(
            f"{ref.uri} changed on disk since it was imported (sha256 {actual[:12]}..., "
            f"expected {ref.sha256[:12]}...); import the pairs again"
        )
    return data


def _within_input_limit(ref: ImageRef, image: PILImage.Image, max_input_pixels: int) -> None:
    if image.width * image.height > max_input_pixels:
        raise ImageReadError(
            f"{ref.uri}: {image.width}x{image.height} is over max_input_pixels={max_input_pixels}"
        )


def _prepare_bytes(
    ref: ImageRef, data: bytes, max_pixels: int | None, max_input_pixels: int
) -> PreparedImage:
    """:func:`prepare_image` for bytes already read and checked against ``ref.sha256``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            _within_input_limit(ref, image, max_input_pixels)
            kind = image.format or ""
            small = max_pixels is None or image.width * image.height <= max_pixels
            as_is = small and image.mode == "RGB" and kind in PASS_THROUGH
            if as_is and ref.decodes_upright:  # these bytes were decoded at import
                return PreparedImage(data, f"image/{kind.lower()}", ref.sha256)
            image.load()
            rotated = image.getexif().get(ORIENTATION, 1) not in (1, None)
            if as_is and not rotated:
                return PreparedImage(data, f"image/{kind.lower()}", ref.sha256)
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except ImageReadError:
        raise
    except Exception as exc:  # a decoder fed hostile bytes may raise anything: the file's fault
        raise ImageReadError(f"{ref.uri}: not a readable image ({exc})") from exc
    if max_pixels is not None and upright.width * upright.height > max_pixels:
        scale = math.sqrt(max_pixels / (upright.width * upright.height))
        size = (max(1, int(upright.width * scale)), max(1, int(upright.height * scale)))
        upright = upright.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.save(out, format="PNG")
    encoded = out.getvalue()
    return PreparedImage(encoded, "image/png", hashlib.sha256(encoded).hexdigest())
