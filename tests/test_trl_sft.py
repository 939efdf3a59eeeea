"""The ``sft`` trainer on tiny real-architecture VLMs, on CPU: it learns an instruction that only
the target image tells, saves a model that loads with ``from_pretrained``, reports its metrics,
and trains LoRA adapters that load and merge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the sft trainer needs TRL: pip install 'editcaption[train]'")
pytest.importorskip("peft", reason="the sft trainer needs peft: pip install 'editcaption[train]'")

from ecap.models import StepModel, folder_hash
from ecap.records import Dataset, Item, Model
from ecap.testing.tiny_trainer_data import colour_pairs, one_torch_thread, training_context
from ecap_trl.config import TrainerConfig
from ecap_trl.engine import load_processor
from ecap_trl.job import Weights
from ecap_trl.rows import user_turn
from ecap_trl.trainers import SFTTrainer


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def dataset_of(items: list[Item]) -> Dataset:
    return Dataset(name="train", content_hash="sha256:test", format="items", count=len(items))


def answer(model: Any, processor: Any, config: TrainerConfig, item: Item) -> str:
    """What the model writes for ``item``, asked exactly as it was trained (greedy)."""
    import torch

    from ecap_trl.rows import pair_images

    images = iter(pair_images(item, config.max_pixels))
    messages = [
        {
            "role": message["role"],
            "content": [
                {"type": "image", "image": next(images)} if part["type"] == "image" else part
                for part in message["content"]
            ],
        }
        for message in user_turn(config)
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    return str(processor.tokenizer.decode(new, skip_special_tokens=True)).strip()


def caption(model: Model, config: TrainerConfig, items: list[Item], tmp_path: Path) -> list[str]:
    """What a ``caption: vlm`` step with ``model: {step: sft}`` writes for ``items``, asked
    with the prompt the model was trained on."""
    from ecap_vlm.captioner import VLMCaptioner, VLMCaptionerConfig

    captioner = VLMCaptioner(
        VLMCaptionerConfig(
            model=StepModel(step="sft"),
            prompt=config.prompt,
            sampling={"max_new_tokens": 12},
            keep_truncated=True,
        ),
        training_context(tmp_path, step_id="samples", trained={"sft": model}),
    )
    results = asyncio.run(captioner.acaption([Item(pair=item.pair) for item in items]))
    captioner.close()
    return [result[0].text for result in results]  # type: ignore[index]


def exact_matches(folder: Path, config: TrainerConfig, items: list[Item]) -> int:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = load_processor(Weights(path=str(folder)))
    return sum(answer(model, processor, config, item) == item.instruction.text for item in items)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_qwen3_vl", "tiny_qwen25_vl"])
def test_sft_learns_an_instruction_that_only_the_target_image_tells(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    base: Path = request.getfixturevalue(fixture)
    train = colour_pairs(tmp_path / "train", 32, seed=0)
    held_out = colour_pairs(tmp_path / "held-out", 8, seed=1)
    metrics: list[tuple[int, dict[str, float]]] = []
    config = SFTTrainer.Config(
        base_model=str(base),
        learning_rate=3e-3,
        lr_scheduler="constant",
        max_steps=120,
        batch_size=4,
        logging_steps=10,
        save_steps=60,
    )
    trainer = SFTTrainer(config, training_context(tmp_path, step_id="sft", metrics=metrics))

    assert exact_matches(base, config, held_out) == 0  # random weights write gibberish
    model = trainer.train(train, dataset_of(train))

    assert exact_matches(Path(model.uri), config, held_out) >= 7
    expected = [item.instruction.text for item in held_out]  # type: ignore[union-attr]
    captions = caption(model, config, held_out, tmp_path)
    assert sum(c == e for c, e in zip(captions, expected, strict=True)) >= 7
    losses = [values["loss"] for _, values in metrics if "loss" in values]
    assert losses[-1] < losses[0] / 5
    logged = metrics[0][1]
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second"} <= logged.keys()
    assert [step for step, values in metrics if "loss" in values] == list(range(10, 121, 10))
    assert model.meta["content_hash"] == folder_hash(Path(model.uri))
    assert model.meta["adapter"] is False and model.meta["base_path"] is None
    assert model.meta["models"]["base_model"]["identity"]["content_hash"] == folder_hash(base)
    assert [c["step"] for c in model.meta["checkpoints"]] == [60, 120]
    assert model.meta["global_step"] == 120
    assert model.dataset_id == model.meta["dataset"]["id"]
    assert model.meta["config"]["learning_rate"] == 3e-3


def test_the_validation_split_is_a_function_of_the_pair_id(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    from ecap_trl.rows import in_validation, sft_rows, split_rows

    items = colour_pairs(tmp_path, 40)
    config = SFTTrainer.Config(base_model=str(tiny_qwen3_vl), validation_fraction=0.25)
    split = split_rows(sft_rows(items, config), config.validation_fraction)
    again = split_rows(sft_rows(list(reversed(items)), config), config.validation_fraction)

    assert split.validation_pairs == again.validation_pairs
    assert 4 <= len(split.validation_pairs) <= 18
    assert not set(split.validation_pairs) & set(split.train_pairs)
    assert all(in_validation(pid, 0.25) for pid in split.validation_pairs)


def test_sft_rows_put_the_images_in_the_captioners_layout(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    from ecap_trl.rows import sft_rows

    item = colour_pairs(tmp_path, 1)[0]
    config = SFTTrainer.Config(base_model=str(tiny_qwen3_vl), system="Be brief.")
    [(pair_id, row)] = sft_rows([item], config)

    assert pair_id == item.pair.id
    assert [image.size for image in row["images"]] == [(64, 64), (64, 64)]
    system, user = row["prompt"]
    assert system["content"] == [{"type": "text", "text": "Be brief."}]
    assert [part["type"] for part in user["content"]] == ["text", "image", "text", "image", "text"]
    assert user["content"][0]["text"] == "Source image:"
    assert user["content"][-1]["text"] == config.prompt
    assert row["completion"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Add a red square."}]}
    ]
    whole = SFTTrainer.Config(base_model=str(tiny_qwen3_vl), answer_only_loss=False)
    [(_, messages_row)] = sft_rows([item], whole)
    assert [m["role"] for m in messages_row["messages"]] == ["user", "assistant"]


@pytest.mark.slow
def test_a_lora_adapter_saves_loads_merges_and_answers(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    train = colour_pairs(tmp_path / "train", 16)
    config = SFTTrainer.Config(
        base_model=str(tiny_qwen3_vl),
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        learning_rate=1e-2,
        max_steps=30,
        batch_size=4,
    )
    model = SFTTrainer(config, training_context(tmp_path, step_id="sft")).train(
        train, dataset_of(train)
    )
    folder = Path(model.uri)

    assert (folder / "adapter_config.json").is_file()
    assert not (folder / "model.safetensors").exists()  # only the adapter is saved
    assert model.meta["adapter"] is True
    assert model.meta["base_path"] == str(tiny_qwen3_vl)
    loaded = AutoModelForImageTextToText.from_pretrained(folder)  # peft finds the base itself
    merged = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl), folder
    ).merge_and_unload()
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl)
    processor = load_processor(Weights(path=str(folder)))
    item = train[0]
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        adapted = loaded(**inputs).logits
        assert torch.allclose(adapted, merged(**inputs).logits, atol=1e-4)
        assert not torch.allclose(adapted, base(**inputs).logits, atol=1e-4)
    # The fixture zeroes the head's rows of special tokens and the adapter leaves the head alone,
    # so after a few steps the answer is right but the end-of-answer token not yet likely.
    assert answer(merged, processor, config, item).startswith(item.instruction.text)  # type: ignore[union-attr]
    [written] = caption(model, config, [item], tmp_path)  # the vlm captioner, adapter on base
    assert written.startswith(item.instruction.text)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"gradient_checkpointing": True, "lora": {"r": 4}},
        {"lora": {"r": 4, "merge": True}},
        {"answer_only_loss": False, "max_pixels": 48 * 48},
        {"validation_fraction": 0.3, "gradient_accumulation": 2},
    ],
    ids=["lora+checkpointing", "lora-merged", "whole-conversation-loss", "validation"],
)
def test_training_options_give_a_model_that_loads(
    options: dict[str, Any], tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForImageTextToText

    items = colour_pairs(tmp_path, 12)
    config = SFTTrainer.Config(
        base_model=str(tiny_qwen3_vl), max_steps=3, batch_size=2, logging_steps=1, **options
    )
    metrics: list[tuple[int, dict[str, float]]] = []
    model = SFTTrainer(config, training_context(tmp_path, metrics=metrics)).train(
        items, dataset_of(items)
    )

    AutoModelForImageTextToText.from_pretrained(model.uri)
    assert [step for step, values in metrics if "loss" in values] == [1, 2, 3]
    merged_or_full = not options.get("lora") or options["lora"].get("merge")
    assert model.meta["adapter"] is not merged_or_full
    assert (Path(model.uri) / "model.safetensors").exists() is bool(merged_or_full)
    split = model.meta["split"]
    assert len(split["train_pairs"]) + len(split["validation_pairs"]) == 12
    if options.get("validation_fraction"):
        assert split["validation_pairs"] and "eval_loss" in model.meta["metrics"]
