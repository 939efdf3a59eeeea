"""Image checks that run while the engine works: :func:`ecap.images.prepare_image_deferred` and
the captioner that uses it.

A local engine decodes every image itself, so the captioner sends each pair's images once their
bytes match the import's hash and their header says they go as they are, and decodes them fully
(ecap's own check) while the engine works. The outcome must be what checking first would give: a
truncated image fails its pair alone, and an image whose decode turns it (an EXIF orientation
stored after the pixels) is captioned as turned.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ecap.images import (
    ORIENTATION,
    ImageChanged,
    ImageReadError,
    prepare_image,
    prepare_image_deferred,
)
from ecap.interfaces import PluginContext
from ecap.records import ImageRef, Item, Pair, SampleError
from ecap.vlm import VLMRequest


def png(width: int = 40, height: int = 20, mode: str = "RGB") -> bytes:
    """A PNG that is not symmetric, so that turning it shows."""
    image = Image.new(mode, (width, height), "teal")
    for x in range(width // 4):
        image.putpixel((x, 0), (255, 0, 0) if mode == "RGB" else (255, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def with_late_orientation(data: bytes, orientation: int = 6) -> bytes:
    """``data`` with an eXIf chunk after the pixels, just before IEND (Pillow reads it only
    when it decodes the image)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    body = exif.tobytes().removeprefix(b"Exif\x00\x00")
    chunk = b"eXIf" + body
    crc = struct.pack(">I", zlib.crc32(chunk))
    iend = data[-12:]
    return data[:-12] + struct.pack(">I", len(body)) + chunk + crc + iend


def ref_to(folder: Path, name: str, data: bytes) -> ImageRef:
    path = folder / name
    path.write_bytes(data)
    return ImageRef(uri=str(path), sha256=hashlib.sha256(data).hexdigest())


def test_an_image_that_goes_as_it_is_is_sent_before_its_decode(tmp_path: Path) -> None:
    ref = ref_to(tmp_path, "plain.png", png())

    deferred = prepare_image_deferred(ref, max_pixels=10_000)

    assert deferred.pending is not None, "the full decode is left for later"
    assert deferred.image.data == (tmp_path / "plain.png").read_bytes()
    assert deferred.confirm() == deferred.image == prepare_image(ref, max_pixels=10_000)


def test_an_image_that_must_change_is_prepared_at_once(tmp_path: Path) -> None:
    rgba = ref_to(tmp_path, "rgba.png", png(mode="RGBA"))
    large = ref_to(tmp_path, "large.png", png(200, 100))

    for ref in (rgba, large):
        deferred = prepare_image_deferred(ref, max_pixels=5_000)
        assert deferred.pending is None
        assert deferred.image == prepare_image(ref, max_pixels=5_000)
        assert deferred.image.mime == "image/png" and deferred.image.sha256 != ref.sha256


def test_hash_size_and_header_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    changed = ref_to(tmp_path, "changed.png", png())
    (tmp_path / "changed.png").write_bytes(png(41, 20))
    not_an_image = ref_to(tmp_path, "text.png", b"not a png any more")
    huge = ref_to(tmp_path, "huge.png", png(600, 600))

    with pytest.raises(ImageChanged):
        prepare_image_deferred(changed)
    with pytest.raises(ImageReadError, match="not a readable image"):
        prepare_image_deferred(not_an_image)
    with pytest.raises(ImageReadError, match="over max_input_pixels=200000"):
        prepare_image_deferred(huge, max_input_pixels=200_000)


def test_the_owed_decode_finds_a_truncated_file_and_a_late_orientation(tmp_path: Path) -> None:
    whole = png()
    truncated = ref_to(tmp_path, "truncated.png", whole[: len(whole) // 2])
    late = ref_to(tmp_path, "late.png", with_late_orientation(whole))

    sent_truncated = prepare_image_deferred(truncated)
    with pytest.raises(ImageReadError, match="not a readable image"):
        sent_truncated.confirm()

    sent_late = prepare_image_deferred(late)
    confirmed = sent_late.confirm()
    assert sent_late.image.data == (tmp_path / "late.png").read_bytes(), "the header hid it"
    assert confirmed != sent_late.image and confirmed == prepare_image(late)
    assert Image.open(io.BytesIO(confirmed.data)).size == (20, 40), "turned upright"


def test_the_csv_import_decodes_each_image_and_records_whether_it_is_upright(tmp_path: Path):
    from ecap_csv.source import inspect_image

    whole = png()
    plain = inspect_image(whole, "plain.png", 10**8)
    late = inspect_image(with_late_orientation(whole), "late.png", 10**8)

    assert plain.decodes_upright and plain.sha256 == hashlib.sha256(whole).hexdigest()
    assert not late.decodes_upright, "the orientation after the pixels would turn it"


def test_bytes_the_import_decoded_are_not_decoded_again(tmp_path: Path) -> None:
    """``decodes_upright`` vouches for the bytes of its sha256: with it, preparing an image
    reads and hashes it and reads its header, and sends it with nothing owed. A truncated
    file shows that no decode runs; the flag is a source's promise (the csv source keeps it by
    decoding at import, as the test above shows)."""
    whole = png()
    truncated = whole[: len(whole) // 2]
    (tmp_path / "truncated.png").write_bytes(truncated)
    vouched = ImageRef(
        uri=str(tmp_path / "truncated.png"),
        sha256=hashlib.sha256(truncated).hexdigest(),
        decodes_upright=True,
    )

    deferred = prepare_image_deferred(vouched)
    assert deferred.pending is None and deferred.confirm().data == truncated
    assert prepare_image(vouched).data == truncated

    (tmp_path / "truncated.png").write_bytes(whole)  # but other bytes are never vouched for
    with pytest.raises(ImageChanged):
        prepare_image_deferred(vouched)
    large = ref_to(tmp_path, "large.png", png(200, 100)).model_copy(
        update={"decodes_upright": True}
    )
    assert prepare_image(large, max_pixels=5_000).mime == "image/png", "still scaled down"


def test_the_captioner_checks_images_while_the_engine_works_and_keeps_the_verdicts(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    from ecap_vlm.captioner import VLMCaptioner, VLMCaptionerConfig

    whole = png()
    source = ref_to(tmp_path, "source.png", png(32, 32))
    targets = {
        "plain": ref_to(tmp_path, "plain.png", whole),
        "truncated": ref_to(tmp_path, "truncated.png", whole[: len(whole) // 2]),
        "late": ref_to(tmp_path, "late.png", with_late_orientation(whole)),
    }
    items = [Item(pair=Pair.of(source, target)) for target in targets.values()]
    config = VLMCaptionerConfig(
        model=str(tiny_qwen3_vl), sampling={"max_new_tokens": 4}, keep_truncated=True
    )
    captioner = VLMCaptioner(
        config, PluginContext(step_id="c", base_dir=tmp_path, work_dir=tmp_path)
    )
    asked: list[list[VLMRequest]] = []
    generate = captioner.backend.generate

    async def recording(requests: Any) -> Any:
        asked.append(list(requests))
        return await generate(requests)

    captioner.backend.generate = recording  # type: ignore[method-assign]
    try:
        plain, truncated, late = asyncio.run(captioner.acaption(items))
        checked_first = asyncio.run(generate([captioner.request_for(items[2])]))[0]
    finally:
        captioner.close()

    assert len(asked[0]) == 3, "all three pairs went to the engine before their decode"
    assert isinstance(truncated, SampleError) and truncated.error_type == "ImageError"
    assert "not a readable image" in truncated.message
    assert isinstance(plain, list) and len(plain) == 1
    assert [len(batch) for batch in asked] == [3, 1], "the turned image was asked again"
    assert asked[1][0].target == prepare_image(targets["late"], max_pixels=1_048_576)
    assert isinstance(late, list) and not isinstance(checked_first, SampleError)
    assert late[0].meta.get("raw", late[0].text) == checked_first.texts[0]
