"""A training SIGKILLed after a checkpoint resumes from it: the step counter goes on from the
checkpoint instead of starting again at zero."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the trainers need TRL: pip install 'editcaption[train]'")

from ecap.records import Dataset
from ecap.testing import kill_run_when
from ecap.testing.tiny_trainer_data import colour_pairs, one_torch_thread, training_context
from ecap_trl.engine import checkpoints
from ecap_trl.trainers import SFTTrainer


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


#: Trains like the test does, in a process of its own that the test kills.
CHILD = """
import json, sys
from pathlib import Path
from ecap.records import Dataset
from ecap.testing.tiny_trainer_data import colour_pairs, training_context
from ecap_trl.trainers import SFTTrainer

folder, fields = Path(sys.argv[1]), json.loads(sys.argv[2])
items = colour_pairs(folder / "pairs", 16)
dataset = Dataset(name="train", content_hash="sha256:test", format="items", count=len(items))
trainer = SFTTrainer(SFTTrainer.Config(**fields), training_context(folder, step_id="sft"))
trainer.train(items, dataset)
"""


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    fields: dict[str, Any] = {
        "base_model": str(tiny_qwen3_vl),
        "learning_rate": 1e-3,
        "max_steps": 60,
        "batch_size": 2,
        "logging_steps": 5,
        "save_steps": 5,
    }
    work = tmp_path / "work" / "sft" / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    kill_run_when(
        [sys.executable, "-c", CHILD, str(tmp_path), json.dumps(fields)],
        lambda: bool(checkpoints(work)),
        env=env,
        timeout=240,
    )
    saved = checkpoints(work)
    assert saved, "the first attempt was killed before it wrote a checkpoint"
    reached = int(saved[-1].name.split("-")[1])
    assert reached < 60, "the first attempt finished before it was killed"

    metrics: list[tuple[int, dict[str, float]]] = []
    items = colour_pairs(tmp_path / "pairs", 16)
    dataset = Dataset(name="train", content_hash="sha256:test", format="items", count=len(items))
    context = training_context(tmp_path, step_id="sft", metrics=metrics)
    model = SFTTrainer(SFTTrainer.Config(**fields), context).train(items, dataset)

    assert model.meta["resumed_from"] == f"checkpoint-{reached}"
    logged = [step for step, values in metrics if "loss" in values]
    assert logged == list(range(reached + 5, 61, 5))
    assert model.meta["global_step"] == 60
    assert model.meta["checkpoints"][-1]["step"] == 60
