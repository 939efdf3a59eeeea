"""The ``dpo`` trainer on a tiny Qwen3-VL, on CPU: the chosen-minus-rejected margin grows while
the reference stays bit-identical, and a LoRA SFT model named ``{step: sft}`` trains on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the dpo trainer needs TRL: pip install 'editcaption[train]'")
pytest.importorskip("peft", reason="the dpo trainer needs peft: pip install 'editcaption[train]'")

from ecap.models import StepModel
from ecap.records import Dataset, Item
from ecap.testing.tiny_trainer_data import (
    colour_pairs,
    colour_preferences,
    one_torch_thread,
    training_context,
)
from ecap_trl.trainers import DPOTrainer, SFTTrainer


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def dataset_of(items: list[Item]) -> Dataset:
    return Dataset(name="train", content_hash="sha256:test", format="items", count=len(items))


@pytest.fixture
def dpo_trainers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every TRL DPOTrainer the plugin builds, kept for the test to inspect after training."""
    import trl

    built: list[Any] = []

    class Recorded(trl.DPOTrainer):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(trl, "DPOTrainer", Recorded)
    return built


def same_weights(model: Any, expected: Any) -> bool:
    import torch

    mine, theirs = model.state_dict(), expected.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.slow
def test_dpo_widens_the_margin_and_leaves_the_reference_untouched(
    tiny_qwen3_vl: Path, tmp_path: Path, dpo_trainers: list[Any]
) -> None:
    from transformers import AutoModelForImageTextToText

    items, texts = colour_preferences(tmp_path, 16)
    metrics: list[tuple[int, dict[str, float]]] = []
    config = DPOTrainer.Config(
        model=str(tiny_qwen3_vl), learning_rate=1e-3, max_steps=20, batch_size=4, logging_steps=5
    )
    context = training_context(tmp_path, step_id="dpo", records=texts, metrics=metrics)

    model = DPOTrainer(config, context).train(items, dataset_of(items))

    margins = [values["rewards/margins"] for _, values in metrics if "rewards/margins" in values]
    assert len(margins) == 4 and margins[-1] > margins[0] and margins[-1] > 0.5
    last = metrics[3][1]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "tokens_per_second"} <= (
        last.keys()
    )
    assert last["rewards/accuracies"] == 1.0
    [trainer] = dpo_trainers
    original = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl)
    assert same_weights(trainer.ref_model, original)
    assert not same_weights(AutoModelForImageTextToText.from_pretrained(model.uri), original)
    assert model.meta["trainer"] == "dpo"
    assert model.meta["config"]["beta"] == 0.1 and model.meta["config"]["loss_type"] == ["sigmoid"]


@pytest.mark.slow
def test_dpo_trains_on_an_sft_lora_adapter_named_by_step(
    tiny_qwen3_vl: Path, tmp_path: Path, dpo_trainers: list[Any]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    sft_items = colour_pairs(tmp_path / "sft", 8)
    lora = {"r": 8, "alpha": 16, "dropout": 0.0}
    sft = SFTTrainer(
        SFTTrainer.Config(
            base_model=str(tiny_qwen3_vl), lora=lora, learning_rate=1e-2, max_steps=5, batch_size=4
        ),
        training_context(tmp_path, step_id="sft"),
    ).train(sft_items, dataset_of(sft_items))
    items, texts = colour_preferences(tmp_path / "dpo", 8)
    config = DPOTrainer.Config(
        model=StepModel(step="sft"),
        ref_model=StepModel(step="sft"),
        lora=lora,
        learning_rate=1e-3,
        max_steps=5,
        batch_size=4,
    )
    context = training_context(tmp_path, step_id="dpo", records=texts, trained={"sft": sft})

    model = DPOTrainer(config, context).train(items, dataset_of(items))

    assert model.base_model_id == sft.id
    assert model.meta["adapter"] is True and model.meta["base_path"] == str(tiny_qwen3_vl)
    assert model.meta["models"]["model"]["record_id"] == sft.id
    assert (Path(model.uri) / "adapter_config.json").is_file()
    sft_merged = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl), sft.uri
    ).merge_and_unload()
    [trainer] = dpo_trainers
    assert same_weights(trainer.ref_model, sft_merged)  # the SFT model, frozen
    dpo_merged = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl), model.uri
    ).merge_and_unload()
    assert not same_weights(dpo_merged, sft_merged)
