"""SFT from a spec: a ``train: sft`` step learns from human instructions, a ``caption: vlm`` step
with ``model: {step: sft}`` samples the trained weights, and each instruction it writes leads back
through the Model and its dataset to the human instructions that shaped it. Changing only
transport fields retrains nothing."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("trl", reason="the sft trainer needs TRL: pip install 'editcaption[train]'")

from sqlalchemy import select

from ecap.records import Item
from ecap.store.schema import Edge, InstructionRow, Metric, ModelRow
from ecap.testing import query_store, run_spec
from ecap.testing.tiny_trainer_data import colour_pairs, one_torch_thread
from ecap_trl.config import DEFAULT_TRAINING_PROMPT


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def pairs_csv(path: Path, items: list[Item]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "target", "instruction"])
        for item in items:
            assert item.instruction is not None
            writer.writerow([item.pair.source.uri, item.pair.target.uri, item.instruction.text])
    return path


@pytest.mark.slow
def test_a_captioner_samples_the_model_a_train_step_made(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    train = colour_pairs(tmp_path / "images", 32, seed=0)
    held_out = colour_pairs(tmp_path / "images", 8, seed=1)
    spec = {
        "name": "sft-then-sample",
        "steps": {
            "refined": {
                "source": "csv",
                "with": {
                    "path": str(pairs_csv(tmp_path / "train.csv", train)),
                    "instruction_origin": "human",
                },
            },
            "unseen": {
                "source": "csv",
                "with": {"path": str(pairs_csv(tmp_path / "unseen.csv", held_out))},
            },
            "sft": {
                "train": "sft",
                "from": "refined",
                "with": {
                    "base_model": str(tiny_qwen3_vl),
                    "learning_rate": 3e-3,
                    "lr_scheduler": "constant",
                    "max_steps": 120,
                    "batch_size": 4,
                    "logging_steps": 20,
                },
            },
            "samples": {
                "caption": "vlm",
                "from": "unseen",
                "with": {
                    "model": {"step": "sft"},
                    "prompt": DEFAULT_TRAINING_PROMPT,  # what the model was trained on
                    "sampling": {"max_new_tokens": 12},
                    "keep_truncated": True,
                },
            },
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    result = run_spec(path)

    assert {step: outcome.status for step, outcome in result.steps.items()} == {
        "refined": "complete",
        "unseen": "complete",
        "sft": "complete",
        "samples": "complete",
    }
    db = tmp_path / "ecap.db"
    [model] = query_store(db, select(ModelRow))
    expected = {item.pair.id: item.instruction.text for item in held_out}  # type: ignore[union-attr]
    written = query_store(db, select(InstructionRow).where(InstructionRow.origin == "model"))
    assert sum(row.text == expected[row.pair_id] for row in written) >= 7
    attributed = query_store(
        db, select(Edge).where(Edge.verb == "wasAttributedTo", Edge.dst_type == "model")
    )
    assert {(e.src_id, e.dst_id) for e in attributed} == {(row.id, model.id) for row in written}
    used = query_store(db, select(Edge.dst_id).where(Edge.src_id == model.dataset_id))
    human = query_store(db, select(InstructionRow.id).where(InstructionRow.origin == "human"))
    assert set(used) == set(human)
    losses = [m.values["loss"] for m in query_store(db, select(Metric)) if "loss" in m.values]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert run_spec(path).steps["sft"].status == "cached"
    spec["steps"]["sft"]["with"].update(logging_steps=1, save_steps=7, dataloader_workers=1)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run_spec(path).steps["sft"].status == "cached"  # transport only: nothing retrains
