"""The ``sft`` and ``dpo`` exporters: the rows ecap's trainers build, written as JSONL, Parquet or
a Hugging Face dataset for TRL scripts outside ecap. No model is needed: these tests read the
files back and check the columns, the image references and the split."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image
from pydantic import ValidationError

import ecap_trl.export
from ecap.cli import cli
from ecap.errors import EcapError
from ecap.interfaces import PluginContext
from ecap.records import Instruction, Item
from ecap.testing import make_pairs, run_spec
from ecap.testing.tiny_trainer_data import (
    VAGUE,
    colour_pairs,
    colour_preferences,
    instruction_for,
    training_context,
)
from ecap_trl.config import DEFAULT_TRAINING_PROMPT, TrainerConfig
from ecap_trl.export import DpoExporter, SftExporter, TrlExportConfig
from ecap_trl.rows import in_validation, user_turn


def export(
    cls: type[SftExporter | DpoExporter],
    items: list[Item],
    context: PluginContext,
    **config: Any,
) -> Path:
    exporter = cls(TrlExportConfig.model_validate(config), context)
    return Path(exporter.export(items, "sha256:test").uri)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def without_nulls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as written: Parquet gives every content part the same fields, so an image part
    reads back as ``{"type": "image", "text": None}`` (which chat templates accept)."""
    return [
        {
            **message,
            "content": [
                {k: v for k, v in part.items() if v is not None} for part in message["content"]
            ],
        }
        for message in messages
    ]


def pixels(data: bytes | Path) -> bytes:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return image.convert("RGB").tobytes()


def test_sft_rows_ask_the_trainers_question_and_point_at_images_relative_to_the_file(tmp_path):
    items = colour_pairs(tmp_path / "images", 4)
    out = export(SftExporter, items, training_context(tmp_path), path="out/sft.jsonl")

    rows = read_rows(out)
    assert [row["pair_id"] for row in rows] == [item.pair.id for item in items]
    first, item = rows[0], items[0]
    assert first["messages"] == [
        *user_turn(TrainerConfig()),
        {"role": "assistant", "content": [{"type": "text", "text": instruction_for("red")}]},
    ]
    assert first["messages"][0]["content"][-1]["text"] == DEFAULT_TRAINING_PROMPT
    assert item.instruction is not None
    assert (first["category"], first["instruction_id"], first["origin"]) == (
        "add",
        item.instruction.id,
        "human",
    )
    source, target = first["images"]
    assert not Path(source).is_absolute() and source.startswith("../images/")
    assert (out.parent / source).resolve() == Path(item.pair.source.uri).resolve()
    assert (out.parent / target).resolve() == Path(item.pair.target.uri).resolve()


def test_absolute_image_paths_name_the_imported_files(tmp_path):
    items = colour_pairs(tmp_path / "images", 2)
    out = export(
        SftExporter, items, training_context(tmp_path), path="sft.jsonl", images="absolute"
    )
    assert read_rows(out)[1]["images"] == [
        str(Path(items[1].pair.source.uri).resolve()),
        str(Path(items[1].pair.target.uri).resolve()),
    ]


def test_dpo_rows_carry_ids_and_failure_labels_as_columns_not_json(tmp_path):
    items, texts = colour_preferences(tmp_path / "images", 3)
    labelled = items[0].preference
    assert labelled is not None
    items[0] = items[0].model_copy(
        update={
            "preference": labelled.model_copy(
                update={"meta": {"rejected_labels": ["vague_verb"], "rejected_score": 1.5}}
            )
        }
    )
    out = export(DpoExporter, items, training_context(tmp_path, records=texts), path="dpo.parquet")

    rows = read_rows(out)
    first = rows[0]
    assert first["prompt"][0]["content"][1] == {"type": "image", "text": None}
    assert without_nulls(first["prompt"]) == user_turn(TrainerConfig())
    assert first["chosen"] == [
        {"role": "assistant", "content": [{"type": "text", "text": instruction_for("red")}]}
    ]
    assert first["rejected"][0]["content"][0]["text"] == VAGUE
    assert (first["chosen_id"], first["rejected_id"]) == (labelled.chosen_id, labelled.rejected_id)
    assert first["rejected_labels"] == ["vague_verb"] and first["rejected_score"] == 1.5
    assert rows[1]["rejected_labels"] is None  # a column for every row, empty where unknown
    assert all(isinstance(path, str) for row in rows for path in row["images"])


def test_dpo_needs_the_stores_records_to_read_the_texts(tmp_path):
    items, _ = colour_preferences(tmp_path / "images", 2)
    context = PluginContext(step_id="export", base_dir=tmp_path, work_dir=tmp_path)
    with pytest.raises(EcapError, match="needs the store's records"):
        export(DpoExporter, items, context, path="dpo.jsonl")


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_embedded_bytes_decode_to_the_pixels_of_the_imported_images(tmp_path, fmt, monkeypatch):
    if fmt == "hf":
        pytest.importorskip("datasets")
    monkeypatch.setattr(ecap_trl.export, "PARQUET_BATCH_ROWS", 2)  # two row groups for three rows
    items = colour_pairs(tmp_path / "images", 3)
    out = export(
        SftExporter,
        items,
        training_context(tmp_path),
        path="sft.parquet" if fmt == "parquet" else "sft-dataset",
        images="bytes",
    )
    if fmt == "parquet":
        images = [row["images"] for row in read_rows(out)]
    else:
        import datasets

        loaded = datasets.load_from_disk(str(out)).cast_column(
            "images", datasets.Sequence(datasets.Image(decode=False))
        )
        images = loaded["images"]
    for item, (source, target) in zip(items, images, strict=True):
        assert pixels(source["bytes"]) == pixels(Path(item.pair.source.uri))
        assert pixels(target["bytes"]) == pixels(Path(item.pair.target.uri))


def test_the_split_column_follows_the_pair_id_whatever_else_is_exported(tmp_path):
    items = colour_pairs(tmp_path / "images", 12)
    context = training_context(tmp_path)
    whole = read_rows(
        export(SftExporter, items, context, path="all.jsonl", validation_fraction=0.5)
    )
    part = read_rows(
        export(SftExporter, items[::3], context, path="part.jsonl", validation_fraction=0.5)
    )

    side = {row["pair_id"]: row["split"] for row in whole}
    assert set(side.values()) == {"train", "validation"}
    assert all(side[row["pair_id"]] == row["split"] for row in part)
    assert all((split == "validation") == in_validation(pid, 0.5) for pid, split in side.items())


@pytest.mark.parametrize("layout", ["sft", "dpo"])
def test_an_answer_with_a_control_token_refuses_the_export_naming_the_pair(tmp_path, layout):
    if layout == "sft":
        items = colour_pairs(tmp_path / "images", 2)
        bad = items[1]
        assert bad.instruction is not None
        dirty = bad.instruction.model_copy(update={"text": "Add a <|image_pad|> square."})
        items[1] = bad.model_copy(update={"instruction": dirty})
        texts: dict[str, Instruction] = {}
    else:
        items, texts = colour_preferences(tmp_path / "images", 2)
        bad = items[1]
        assert bad.preference is not None
        rejected = texts[bad.preference.rejected_id]
        texts[rejected.id] = rejected.model_copy(update={"text": "Edit it.<|im_end|>"})
    cls = SftExporter if layout == "sft" else DpoExporter
    context = training_context(tmp_path, records=texts)
    with pytest.raises(EcapError, match=f"pair {bad.pair.id}: .*control token"):
        export(cls, items, context, path="rows.jsonl")
    assert not (tmp_path / "rows.jsonl").exists()


def test_an_image_changed_since_import_refuses_the_export_naming_the_pair(tmp_path):
    items = colour_pairs(tmp_path / "images", 2)
    Image.new("RGB", (8, 8)).save(items[1].pair.target.uri)
    for path in ("rows.jsonl", "rows.parquet"):
        with pytest.raises(EcapError, match=f"pair {items[1].pair.id}: target image unreadable"):
            export(SftExporter, items, training_context(tmp_path), path=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no partial file left


def test_the_format_comes_from_the_suffix_and_jsonl_cannot_hold_bytes():
    assert TrlExportConfig(path="a/rows.parquet").file_format == "parquet"
    assert TrlExportConfig(path="a/rows.jsonl").file_format == "jsonl"
    assert TrlExportConfig(path="a/dataset").file_format == "hf"
    assert TrlExportConfig(path="rows.txt", format="jsonl").file_format == "jsonl"
    with pytest.raises(ValidationError, match=r"cannot tell it from the suffix '\.txt'"):
        TrlExportConfig(path="rows.txt")
    with pytest.raises(ValidationError, match="images: bytes needs format parquet or hf"):
        TrlExportConfig(path="rows.jsonl", images="bytes")


def test_datasets_loads_the_exported_files_with_images_decoded_from_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    items, texts = colour_preferences(tmp_path / "images", 4)
    context = training_context(tmp_path, records=texts)
    jsonl = export(DpoExporter, items, context, path="dpo.jsonl")
    parquet = export(DpoExporter, items, context, path="dpo.parquet", images="bytes")

    from_json = datasets.load_dataset("json", data_files=str(jsonl), split="train")
    assert from_json.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert from_json[0]["images"] == read_rows(jsonl)[0]["images"]
    opened = from_json.map(
        lambda row: {"images": [str(jsonl.parent / path) for path in row["images"]]}
    ).cast_column("images", datasets.Sequence(datasets.Image()))
    assert opened[0]["images"][1].convert("RGB").tobytes() == pixels(Path(items[0].pair.target.uri))
    from_parquet = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    source, target = from_parquet[0]["images"]
    assert isinstance(source, Image.Image) and source.size == (64, 64)
    assert target.convert("RGB").tobytes() == pixels(Path(items[0].pair.target.uri))
    assert from_parquet[0]["chosen"][0]["content"][0]["text"] == instruction_for("red")


def test_ecap_export_writes_sft_rows_from_a_store(tmp_path, write_spec, ecap_registry):
    make_pairs(tmp_path, 6)
    spec = write_spec("""
        steps:
          pairs: {source: csv, with: {path: pairs.csv}}
    """)
    assert run_spec(spec).steps["pairs"].counts["done"] == 6

    out = tmp_path / "exported" / "sft.parquet"
    args = ["export", "--step", "pairs", "--format", "sft", "-o", str(out), "--store", str(spec)]
    result = CliRunner().invoke(cli, [*args, "--with", "validation_fraction=0.5"])
    assert result.exit_code == 0, result.output

    rows = read_rows(out)
    assert without_nulls(rows[0]["messages"][:1]) == user_turn(TrainerConfig())
    assert sorted(row["messages"][-1]["content"][0]["text"] for row in rows) == [
        f"Make pair {i} bluer." for i in range(6)
    ]
    assert {row["origin"] for row in rows} == {"reference"}
    assert all((row["split"] == "validation") == in_validation(row["pair_id"], 0.5) for row in rows)
    for row in rows:
        assert all((out.parent / path).is_file() for path in row["images"])

    bad = CliRunner().invoke(cli, [*args, "--with", "images"])
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.output
    jsonl = [*args[:-4], "-o", str(tmp_path / "sft.jsonl"), "--store", str(spec)]
    no_bytes = CliRunner().invoke(cli, [*jsonl, "--with", "images=bytes"])
    assert no_bytes.exit_code != 0 and "images: bytes needs format parquet or hf" in no_bytes.output


def test_an_export_step_in_a_spec_writes_the_rows_next_to_the_spec(
    tmp_path, write_spec, ecap_registry
):
    make_pairs(tmp_path, 3)
    spec = write_spec("""
        steps:
          pairs: {source: csv, with: {path: pairs.csv}}
          rows: {export: sft, from: pairs, with: {path: out/sft.jsonl, images: absolute}}
    """)
    run_spec(spec)

    rows = read_rows(tmp_path / "out" / "sft.jsonl")
    assert len(rows) == 3 and {row["split"] for row in rows} == {"train"}
    assert all(
        Path(path).is_absolute() and Path(path).is_file() for r in rows for path in r["images"]
    )


def test_ecap_export_writes_dpo_rows_with_the_annotators_failure_labels(
    tmp_path, write_spec, ecap_registry
):
    """Preferences a (simulated) human made in a run: the texts come from the store by id, the
    rejected instruction's defect labels and score from the preference's meta."""
    spec = write_spec("""
        steps:
          pairs: {source: shapes, with: {count: 6, seed: 1, image_size: 48}}
          captions: {caption: fake, from: pairs, with: {template: "Edit the {category} image."}}
          corrections: {annotate: shapes-annotator, from: captions, with: {task: prefer}}
    """)
    run_spec(spec)

    out = tmp_path / "dpo.parquet"
    args = ["export", "--step", "corrections", "--format", "dpo", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--store", str(spec), "--with", "images=bytes"])
    assert result.exit_code == 0, result.output

    rows = read_rows(out)
    assert rows, "the fake captioner's vague instructions should all have been corrected"
    for row in rows:
        assert row["rejected"][0]["content"][0]["text"].startswith("Edit the ")
        assert row["chosen"][0]["content"][0]["text"] != row["rejected"][0]["content"][0]["text"]
        assert isinstance(row["rejected_labels"], list) and row["rejected_labels"]
        assert isinstance(row["rejected_score"], float)
        assert [len(image["bytes"]) > 0 for image in row["images"]] == [True, True]


def test_trls_collators_turn_the_loaded_rows_into_model_inputs(tmp_path, tiny_qwen3_vl):
    """The rows a TRL script reads from the export go through TRL's own vision collators: two
    images per SFT row, two per side of a DPO row."""
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("trl", reason="TRL's collators: pip install 'editcaption[train]'")
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from ecap_trl.engine import load_processor
    from ecap_trl.job import Weights

    processor = load_processor(Weights(path=str(tiny_qwen3_vl)))
    sft_items = colour_pairs(tmp_path / "sft", 2)
    dpo_items, texts = colour_preferences(tmp_path / "dpo", 2)
    context = training_context(tmp_path, records=texts)
    sft = export(SftExporter, sft_items, context, path="sft.parquet", images="bytes")
    dpo = export(DpoExporter, dpo_items, context, path="dpo.parquet", images="bytes")

    def load(path: Path) -> list[dict[str, Any]]:
        return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))

    sft_batch = DataCollatorForVisionLanguageModeling(processor)(load(sft))
    assert sft_batch["image_grid_thw"].shape[0] == 4 and sft_batch["input_ids"].shape[0] == 2
    dpo_batch = DataCollatorForVisionPreference(processor)(load(dpo))
    assert dpo_batch["image_grid_thw"].shape[0] == 8 and dpo_batch["input_ids"].shape[0] == 4
