"""Importing with the csv source on every core: a batch of large images is split across threads
(tiny ones stay on one), results keep their order, a bad image fails only its own row, and every
image path resolves exactly as ``Path.resolve`` resolves it (the folder's resolution is computed
once and reused)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import ecap_csv.source
from ecap import images
from ecap.interfaces import PluginContext
from ecap.records import Item, SampleError
from ecap.testing import make_pairs
from ecap_csv.source import CsvSource, CsvSourceConfig, ImageError


def source(csv: Path, **config: object) -> CsvSource:
    context = PluginContext(
        step_id="pairs",
        base_dir=csv.parent,
        work_dir=csv.parent / "work",
        limit=None,
        logger=logging.getLogger("test"),
    )
    return CsvSource(CsvSourceConfig(path=csv.name, **config), context)


def test_across_cores_keeps_the_order_of_its_values_and_raises_what_the_function_raises(
    monkeypatch,
):
    monkeypatch.setattr(images, "_cores", lambda: 3)
    assert images.across_cores(lambda v: v * 2, list(range(10))) == [v * 2 for v in range(10)]
    assert images.across_cores(str, []) == []
    assert images.across_cores(str, [7]) == ["7"]

    def fails_on_five(value: int) -> int:
        if value == 5:
            raise ValueError("five")
        return value

    with pytest.raises(ValueError, match="five"):
        images.across_cores(fails_on_five, list(range(10)))


def test_rows_load_on_several_threads_only_when_their_images_are_large(tmp_path, monkeypatch):
    spread: list[int] = []
    across_cores = images.across_cores

    def recorded(function, values):  # type: ignore[no-untyped-def]
        spread.append(len(values))
        return across_cores(function, values)

    monkeypatch.setattr(ecap_csv.source, "across_cores", recorded)
    csv = make_pairs(tmp_path, 4)  # 16 px PNGs: well under PARALLEL_IMAGE_BYTES
    plugin = source(csv)
    rows = list(plugin.rows())
    plugin.load(rows)
    assert spread == []
    monkeypatch.setattr(ecap_csv.source, "PARALLEL_IMAGE_BYTES", 1)
    plugin.load(rows)
    assert spread == [4]


def test_a_corrupt_or_missing_image_fails_only_its_row_when_rows_load_in_parallel(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(images, "_cores", lambda: 2)
    monkeypatch.setattr(ecap_csv.source, "PARALLEL_IMAGE_BYTES", 1)
    csv = make_pairs(tmp_path, 30, corrupt=(3, 17), missing=(22,))
    plugin = source(csv)
    results = plugin.load(list(plugin.rows()))
    failed = [i for i, r in enumerate(results) if isinstance(r, SampleError)]
    assert failed == [3, 17, 22]
    assert [r.error_type for r in results if isinstance(r, SampleError)] == ["ImageError"] * 3
    loaded = [r[0] for r in results if not isinstance(r, SampleError)]
    assert all(isinstance(item, Item) for item in loaded)
    assert [item.pair.meta["row"] for item in loaded] == [
        i + 2 for i in range(30) if i not in (3, 17, 22)
    ]


def test_image_paths_resolve_as_path_resolve_does_through_links(tmp_path):
    csv = make_pairs(tmp_path, 2)
    real = tmp_path / "images"
    (tmp_path / "linked-folder").symlink_to(real)
    (real / "linked-file.png").symlink_to(real / "0-source.png")
    plugin = source(csv)
    for location in (
        "images/0-source.png",
        "./images//0-target.png",
        "linked-folder/1-source.png",
        "images/linked-file.png",
        "linked-folder/../images/1-target.png",
        "images/..",
        str(real / "0-source.png"),
        "images/not-there.png",
    ):
        expected = str((tmp_path / location).resolve())
        assert plugin._uri(location) == expected, location
        assert plugin._uri(location) == expected, f"{location}, from the folder cache"


def test_with_images_root_a_link_out_of_it_is_still_refused_once_its_folder_is_cached(tmp_path):
    csv = make_pairs(tmp_path, 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes((tmp_path / "images" / "0-source.png").read_bytes())
    os.symlink(outside / "x.png", tmp_path / "images" / "escape.png")
    plugin = source(csv, images_root="images")
    assert plugin._uri("0-source.png") == str((tmp_path / "images" / "0-source.png").resolve())
    with pytest.raises(ImageError, match="leads out of images_root"):
        plugin._uri("escape.png")
