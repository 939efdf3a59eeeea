"""Bad input to the trainers fails before any training starts, with an error that names the
field, file or pair to fix."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the trainers need TRL: pip install 'editcaption[train]'")

from pydantic import ValidationError

from ecap.errors import EcapError
from ecap.hashing import semantic_config
from ecap.records import Dataset, ImageRef, Item, Pair
from ecap.testing.tiny_trainer_data import colour_pairs, colour_preferences, training_context
from ecap_trl.trainers import DPOTrainer, SFTTrainer

DATASET = Dataset(name="train", content_hash="sha256:test", format="items", count=0)


def sft_fails(base: Path, tmp_path: Path, items: list[Item], **fields: Any) -> str:
    """Train with ``fields`` and return the error; nothing may have been trained."""
    config = SFTTrainer.Config(base_model=str(base), max_steps=1, **fields)
    context = training_context(tmp_path, step_id="sft")
    with pytest.raises(EcapError) as error:
        SFTTrainer(config, context).train(items, DATASET)
    assert not (context.work_dir / "checkpoints").exists()
    return str(error.value)


def test_an_empty_dataset_is_refused(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    assert "dataset is empty" in sft_fails(tiny_qwen3_vl, tmp_path, [])


def test_an_unreadable_image_names_its_pair(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    good = colour_pairs(tmp_path, 3)
    broken_file = tmp_path / "broken.png"
    broken_file.write_bytes(b"not a png at all")
    broken = ImageRef(uri=str(broken_file), sha256=hashlib.sha256(b"not a png at all").hexdigest())
    pair = Pair.of(good[0].pair.source, broken)
    items = [*good, Item(pair=pair, instruction=good[0].instruction)]

    message = sft_fails(tiny_qwen3_vl, tmp_path, items)

    assert f"pair {pair.id}" in message and "target image unreadable" in message
    assert "broken.png" in message


def test_an_instruction_carrying_a_media_token_names_its_pair(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    """A processor reads ``<|video_pad|>`` in text as the token itself and refuses the row (a
    video token with no video): that must be an error naming the pair, before any training."""
    good = colour_pairs(tmp_path, 3)
    poisoned = good[1].instruction.model_copy(update={"text": "Add a red <|video_pad|> square."})
    items = [good[0], good[1].model_copy(update={"instruction": poisoned}), good[2]]

    message = sft_fails(tiny_qwen3_vl, tmp_path, items)

    assert f"pair {good[1].pair.id}" in message and "'<|video_pad|>'" in message


def test_a_base_model_folder_that_does_not_exist_names_the_field(tmp_path: Path) -> None:
    config = SFTTrainer.Config(base_model="./models/no-such-model")
    with pytest.raises(EcapError, match=r"sft: base_model: model folder './models/no-such-model'"):
        SFTTrainer(config, training_context(tmp_path)).train(colour_pairs(tmp_path, 2), DATASET)


def test_a_deepspeed_file_that_does_not_parse_names_the_field_and_file(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2,}')

    message = sft_fails(tiny_qwen3_vl, tmp_path, colour_pairs(tmp_path, 2), deepspeed="ds.json")

    assert "deepspeed:" in message and str(tmp_path / "ds.json") in message
    assert "not valid JSON" in message


def test_an_unknown_deepspeed_preset_lists_the_presets(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    message = sft_fails(tiny_qwen3_vl, tmp_path, colour_pairs(tmp_path, 2), deepspeed="zero4")
    assert "zero2, zero3, zero3-offload" in message


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"bf16": True}, "bf16: true needs a CUDA device"),
        ({"lora": {"load_in_4bit": True}}, "lora.load_in_4bit (QLoRA) needs a CUDA device"),
    ],
)
def test_cuda_only_options_are_refused_on_a_cpu_machine(
    fields: dict[str, Any], named: str, tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert named in sft_fails(tiny_qwen3_vl, tmp_path, colour_pairs(tmp_path, 2), **fields)


def test_liger_kernels_asked_for_but_missing_name_the_package(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    message = sft_fails(tiny_qwen3_vl, tmp_path, colour_pairs(tmp_path, 2), use_liger_kernel=True)
    assert "use_liger_kernel: true needs the liger-kernel package" in message


def test_dpo_needs_items_with_preferences(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    items = colour_pairs(tmp_path, 2)
    config = DPOTrainer.Config(model=str(tiny_qwen3_vl))
    with pytest.raises(EcapError, match=f"pair {items[0].pair.id}: no preference"):
        DPOTrainer(config, training_context(tmp_path)).train(items, DATASET)


def test_dpo_names_a_preference_whose_instruction_is_not_stored(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    items, texts = colour_preferences(tmp_path, 2)
    rejected = items[1].preference.rejected_id  # type: ignore[union-attr]
    del texts[rejected]
    config = DPOTrainer.Config(model=str(tiny_qwen3_vl))
    with pytest.raises(EcapError, match=f"rejected instruction {rejected} is not in the store"):
        DPOTrainer(config, training_context(tmp_path, records=texts)).train(items, DATASET)


def test_several_processes_need_a_launcher() -> None:
    with pytest.raises(ValidationError, match=r"need launcher\.type torchrun, accelerate or"):
        SFTTrainer.Config(base_model="m", launcher={"nproc_per_node": 2})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="lerning_rate"):
        SFTTrainer.Config(base_model="m", lerning_rate=1e-3)  # type: ignore[call-arg]


def test_new_weights_or_a_new_deepspeed_file_behind_the_same_paths_change_the_key(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(tiny_qwen3_vl, tmp_path / "base")
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    config = SFTTrainer.Config(base_model="./base", deepspeed="ds.json")
    trainer = SFTTrainer(config, training_context(tmp_path))
    before = trainer.fingerprint()

    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 3}}')
    after_deepspeed = trainer.fingerprint()
    (tmp_path / "base" / "generation_config.json").write_text('{"do_sample": false}')
    after_weights = trainer.fingerprint()

    assert len({before, after_deepspeed, after_weights}) == 3
    assert before is not None and before.startswith(f"base_model={tmp_path / 'base'}#sha256:")


def test_transport_fields_never_change_the_cache_key() -> None:
    """Logging, checkpoint interval, dataloader workers and the rendezvous address may change
    between attempts of one training without starting it again."""
    plain = SFTTrainer.Config(base_model="m")
    tuned = SFTTrainer.Config(
        base_model="m",
        logging_steps=1,
        save_steps=7,
        save_total_limit=None,
        dataloader_workers=4,
        launcher={"type": "none", "master_port": 29999, "master_addr": "10.0.0.1"},
    )
    assert semantic_config(plain) == semantic_config(tuned)
    assert semantic_config(plain) != semantic_config(plain.model_copy(update={"seed": 1}))
