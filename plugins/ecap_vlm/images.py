"""Turning a pair's image references into the exact images every backend receives.

Images are read once, decoded fully (a truncated or corrupt file fails its pair here), refused when
absurdly large (a decompression bomb, or a scan nobody meant to caption), and scaled down to at most
``max_pixels`` with their aspect ratio kept. The result is PNG bytes (or the original bytes when no
scaling was needed), so a hosted API, a local server and an in-process model all see the same
pixels for the same pair.
"""

from __future__ import annotations

import hashlib
import io
import math

from ecap.images import read_bytes
from ecap.records import ImageRef

from .backends.base import ImageInput


class ImageProblem(ValueError):
    """An image that cannot be captioned."""


def prepare_image(ref: ImageRef, *, max_pixels: int, max_input_pixels: int) -> ImageInput:
    from PIL import Image, UnidentifiedImageError

    data = read_bytes(ref.uri)
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.width * image.height
            if pixels > max_input_pixels:
                raise ImageProblem(
                    f"{ref.uri}: {image.width}x{image.height} is over "
                    f"max_input_pixels={max_input_pixels}"
                )
            image.load()
            if pixels <= max_pixels and image.format in ("PNG", "JPEG", "WEBP", "GIF"):
                mime = f"image/{image.format.lower()}"
                return ImageInput(data, mime, hashlib.sha256(data).hexdigest())
            scale = min(1.0, math.sqrt(max_pixels / pixels))
            size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
            converted = image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImageProblem(f"{ref.uri}: not a readable image ({exc})") from exc
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    converted.save(out, format="PNG")
    encoded = out.getvalue()
    return ImageInput(encoded, "image/png", hashlib.sha256(encoded).hexdigest())


__all__ = ["ImageProblem", "prepare_image"]
