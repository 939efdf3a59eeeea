"""Reading images that pairs reference, from disk or by URL. Images never enter the store.

:func:`prepare_image` is the one way a plugin that shows images to a model (captioners, judges)
reads them, so that the same pair gives the same pixels everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import mimetypes
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .records import ImageRef

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: The EXIF tag that says how a camera held the picture.
ORIENTATION = 0x0112

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
    fails here, not in a server), refused over ``max_input_pixels`` (a decompression bomb), turned
    upright by its EXIF orientation, converted to RGB and scaled down to ``max_pixels`` with its
    aspect kept. An RGB PNG, JPEG or WebP without rotation that needs no scaling is passed on as
    the original bytes (lossless and cheapest); anything else is re-encoded as PNG.
    ``ImageReadError`` (or its subclass :class:`ImageChanged`) says what is wrong.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = read_bytes(ref.uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise ImageChanged(
            f"{ref.uri} changed on disk since it was imported (sha256 {actual[:12]}..., "
            f"expected {ref.sha256[:12]}...); import the pairs again"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.width * image.height
            if pixels > max_input_pixels:
                raise ImageReadError(
                    f"{ref.uri}: {image.width}x{image.height} is over "
                    f"max_input_pixels={max_input_pixels}"
                )
            image.load()
            rotated = image.getexif().get(ORIENTATION, 1) not in (1, None)
            small = max_pixels is None or pixels <= max_pixels
            if small and not rotated and image.mode == "RGB" and image.format in PASS_THROUGH:
                return PreparedImage(data, f"image/{image.format.lower()}", actual)
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{ref.uri}: not a readable image ({exc})") from exc
    if max_pixels is not None and upright.width * upright.height > max_pixels:
        scale = math.sqrt(max_pixels / (upright.width * upright.height))
        size = (max(1, int(upright.width * scale)), max(1, int(upright.height * scale)))
        upright = upright.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.save(out, format="PNG")
    encoded = out.getvalue()
    return PreparedImage(encoded, "image/png", hashlib.sha256(encoded).hexdigest())
