"""Benchmark importers on small files written here in each set's published schema."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import select

from ecap.images import prepare_image
from ecap.interfaces import PluginContext
from ecap.records import Item, SampleError
from ecap.store.schema import PairRow
from ecap.testing import query_store, run_spec
from ecap_bench.source import (
    BenchmarkSource,
    ByteMorphSource,
    HQEditSource,
    InstructPix2PixSource,
    MagicBrushSource,
)

#: The hub's image feature as stored in Parquet.
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(seed: int, size: tuple[int, int] = (12, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 90)).save(out, format="PNG")
    return out.getvalue()


def image(seed: int) -> dict[str, Any]:
    return {"bytes": png(seed), "path": f"{seed}.png"}


def hq_edit_row(i: int) -> dict[str, Any]:
    return {
        "input": f"a red barn in a field, number {i}",
        "input_image": image(2 * i),
        "edit": f"Paint the barn blue ({i}).",
        "inverse_edit": f"Paint the barn red ({i}).",
        "output": f"a blue barn in a field, number {i}",
        "output_image": image(2 * i + 1),
    }


def bytemorph_row(i: int) -> dict[str, Any]:
    return {
        "image_id": f"{i:04d}",
        "src_img": image(2 * i),
        "tgt_img": image(2 * i + 1),
        "edit_prompt": f"The camera zooms in on the cup ({i}).",
        "edit_prompt_rewrite_instruction": f"Zoom in on the cup ({i}).",
        "src_img_caption": "a cup on a table",
        "tgt_img_caption": "a close-up of a cup",
        "edit_type": "0_camera_zoom",
    }


def magicbrush_row(i: int) -> dict[str, Any]:
    return {
        "img_id": f"{100 + i}",
        "turn_index": 1 + i % 2,
        "source_img": image(2 * i),
        "mask_img": image(99),
        "instruction": f"Put a hat on the dog ({i}).",
        "target_img": image(2 * i + 1),
    }


def instructpix2pix_row(i: int) -> dict[str, Any]:
    return {
        "original_prompt": "a photo of a mountain lake",
        "original_image": image(2 * i),
        "edit_prompt": f"make it winter ({i})",
        "edited_prompt": "a photo of a frozen mountain lake",
        "edited_image": image(2 * i + 1),
    }


SETS: dict[str, tuple[type[BenchmarkSource], Callable[[int], dict[str, Any]], str]] = {
    "hq-edit": (HQEditSource, hq_edit_row, "HQ-Edit"),
    "bytemorph": (ByteMorphSource, bytemorph_row, "ByteMorph-Bench"),
    "magicbrush": (MagicBrushSource, magicbrush_row, "MagicBrush"),
    "instructpix2pix": (InstructPix2PixSource, instructpix2pix_row, "InstructPix2Pix"),
}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as the hub stores them: image columns as {bytes, path} structs."""
    columns = {
        name: pa.array([r[name] for r in rows], IMAGE if isinstance(rows[0][name], dict) else None)
        for name in rows[0]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=2)
    return path


def load(
    plugin: type[BenchmarkSource], folder: Path, **config: Any
) -> list[list[Item] | SampleError]:
    context = PluginContext(step_id="bench", base_dir=folder, work_dir=folder / "work")
    source = plugin(plugin.Config(**config), context)  # type: ignore[arg-type]
    return source.load(list(source.rows()))


def imported(results: list[list[Item] | SampleError]) -> list[Item]:
    assert not [r for r in results if isinstance(r, SampleError)], results
    return [item for r in results if isinstance(r, list) for item in r]


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_benchmark_imports_its_published_parquet_layout(tmp_path: Path, name: str) -> None:
    plugin, make_row, benchmark = SETS[name]
    rows = [make_row(i) for i in range(5)]
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)
    items = imported(load(plugin, tmp_path, path="data"))
    assert len(items) == 5
    layout = plugin.layout
    for item, row in zip(items, rows, strict=True):
        assert item.pair.meta["benchmark"] == benchmark
        assert item.instruction is not None
        assert item.instruction.origin == "reference" and item.instruction.author == benchmark
        assert item.instruction.text == row[layout.instruction]
        assert Path(item.pair.source.uri).read_bytes() == row[layout.source]["bytes"]
        assert Path(item.pair.target.uri).read_bytes() == row[layout.target]["bytes"]
        assert (item.pair.source.width, item.pair.source.height) == (12, 8)
        prepare_image(item.pair.target)  # the stored image checks out
        assert all(item.pair.meta[k] == row[k] for k in layout.keep)
        assert item.reference is None  # these sets carry no structured ground truth
    if name == "bytemorph":
        assert {i.pair.category for i in items} == {"0_camera_zoom"}


def test_bytemorph_numbered_categories_get_their_names(tmp_path: Path) -> None:
    rows = [{**bytemorph_row(i), "edit_type": i % 5} for i in range(5)]
    write_parquet(tmp_path / "bm.parquet", rows)
    items = imported(load(ByteMorphSource, tmp_path, path="bm.parquet"))
    assert [i.pair.category for i in items] == [
        "camera_zoom",
        "camera_motion",
        "object_motion",
        "human_motion",
        "interaction",
    ]


def test_hq_edit_can_also_import_each_inverse_edit(tmp_path: Path) -> None:
    write_parquet(tmp_path / "hq.parquet", [hq_edit_row(0)])
    forward, inverse = imported(load(HQEditSource, tmp_path, path="hq.parquet", inverse=True))
    assert inverse.pair.source == forward.pair.target and inverse.pair.target == forward.pair.source
    assert inverse.instruction is not None and inverse.instruction.text == "Paint the barn red (0)."
    assert inverse.pair.meta["inverse"] is True and "inverse" not in forward.pair.meta


def test_shards_are_read_in_order_and_limit_caps_the_rows(tmp_path: Path) -> None:
    write_parquet(
        tmp_path / "d" / "train-00000-of-00002.parquet", [magicbrush_row(i) for i in range(3)]
    )
    write_parquet(
        tmp_path / "d" / "train-00001-of-00002.parquet", [magicbrush_row(i) for i in range(3, 6)]
    )
    every = imported(load(MagicBrushSource, tmp_path, path="d"))
    assert [i.pair.meta["img_id"] for i in every] == [str(100 + i) for i in range(6)]
    assert len(imported(load(MagicBrushSource, tmp_path, path="d", limit=4))) == 4


def test_importing_twice_gives_the_same_pairs(tmp_path: Path) -> None:
    write_parquet(tmp_path / "ip2p.parquet", [instructpix2pix_row(i) for i in range(3)])
    first = imported(load(InstructPix2PixSource, tmp_path, path="ip2p.parquet"))
    second = imported(load(InstructPix2PixSource, tmp_path, path="ip2p.parquet"))
    assert [i.pair.id for i in first] == [i.pair.id for i in second]


def test_jsonl_with_image_paths_and_structured_ground_truth(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for seed in range(4):
        (tmp_path / "images" / f"{seed}.png").write_bytes(png(seed))
    rows = [
        {
            "img_id": "1",
            "turn_index": 1,
            "source_img": "images/0.png",
            "target_img": "images/1.png",
            "instruction": "Put a hat on the dog.",
            "primary": ["A red hat appears on the dog's head."],
            "secondary": [],
            "overall": "The dog now wears a red hat.",
        },
        {"source_img": "images/2.png", "target_img": "images/missing.png", "instruction": "x"},
        {"source_img": "https://example.com/a.png", "target_img": "images/3.png"},
    ]
    (tmp_path / "mb.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, missing, remote = load(MagicBrushSource, tmp_path, path="mb.jsonl")
    assert isinstance(first, list)
    [item] = first
    assert item.reference is not None
    assert item.reference.primary == ["A red hat appears on the dog's head."]
    assert item.reference.overall == "The dog now wears a red hat."
    assert isinstance(missing, SampleError) and "missing.png" in missing.message
    assert isinstance(remote, SampleError) and "local files only" in remote.message


def test_a_corrupt_image_fails_its_row_alone(tmp_path: Path) -> None:
    rows = [instructpix2pix_row(0), instructpix2pix_row(1)]
    rows[1]["edited_image"] = {"bytes": b"not a png", "path": "x.png"}
    write_parquet(tmp_path / "ip2p.parquet", rows)
    good, bad = load(InstructPix2PixSource, tmp_path, path="ip2p.parquet")
    assert isinstance(good, list)
    assert isinstance(bad, SampleError) and "edited_image" in bad.message


def test_a_file_written_by_the_datasets_library_imports(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "input": datasets.Value("string"),
            "input_image": datasets.Image(),
            "edit": datasets.Value("string"),
            "inverse_edit": datasets.Value("string"),
            "output": datasets.Value("string"),
            "output_image": datasets.Image(),
        }
    )
    rows = [hq_edit_row(i) for i in range(2)]
    table = {k: [r[k] for r in rows] for k in rows[0]}
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp_path / "hq.parquet"))
    items = imported(load(HQEditSource, tmp_path, path="hq.parquet"))
    assert [i.instruction.text for i in items if i.instruction] == [r["edit"] for r in rows]


def test_benchmark_names_reach_the_store_for_reports(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    write_parquet(tmp_path / "bm.parquet", [bytemorph_row(i) for i in range(3)])
    spec = write_spec(
        """
        steps:
          bench:
            source: bytemorph
            with: {path: bm.parquet, limit: 2}
        """
    )
    assert run_spec(spec).status == "complete"
    pairs = query_store(tmp_path / "ecap.db", select(PairRow))
    assert [p.meta["benchmark"] for p in pairs] == ["ByteMorph-Bench"] * 2
