"""Whether a pair's target differs from its source at all: a difference hash and a thumbnail.

A difference hash (dHash) compares each pixel of a 9x8 grey thumbnail with its right neighbour:
64 bits that survive re-encoding, resizing and small brightness shifts, so a re-saved copy of the
source hashes (almost) the same. It is blind to colour, though: a whole image recoloured has the
same gradients. A pair is therefore near-identical only when the hashes are close *and* no cell of
a 16x16 colour thumbnail changed by more than a few levels, which a recolouring or a changed
object does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

HASH_SIZE = 8
THUMBNAIL = 16


def dhash(image: PILImage.Image, size: int = HASH_SIZE) -> int:
    """The ``size * size``-bit difference hash of ``image``."""
    from PIL import Image

    grey = image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    pixels = grey.tobytes()
    bits = 0
    for row in range(size):
        for column in range(size):
            left = pixels[row * (size + 1) + column]
            right = pixels[row * (size + 1) + column + 1]
            bits = (bits << 1) | (left > right)
    return bits


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def max_cell_difference(source: PILImage.Image, target: PILImage.Image) -> int:
    """The largest per-channel difference (0-255) between the two images' colour thumbnails."""
    from PIL import Image

    size = (THUMBNAIL, THUMBNAIL)
    a = source.convert("RGB").resize(size, Image.Resampling.BOX).tobytes()
    b = target.convert("RGB").resize(size, Image.Resampling.BOX).tobytes()
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class PairDifference:
    hash_distance: int  # bits of 64 that differ
    max_cell_difference: int  # 0-255

    def near_identical(self, max_hash_distance: int, max_cell: int) -> bool:
        return self.hash_distance <= max_hash_distance and self.max_cell_difference <= max_cell


def difference(source: PILImage.Image, target: PILImage.Image) -> PairDifference:
    return PairDifference(
        hash_distance=hamming(dhash(source), dhash(target)),
        max_cell_difference=max_cell_difference(source, target),
    )


__all__ = ["PairDifference", "dhash", "difference", "hamming", "max_cell_difference"]
