"""Launched training: DeepSpeed ZeRO-2 and ZeRO-3 over two CPU processes (torchrun and the
DeepSpeed launcher, gloo) give a model that loads, for SFT and DPO; the child's output reaches
the step's logger and its metrics the step's ``log_metrics``; a failing child fails the step with
its last lines."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the trainers need TRL: pip install 'editcaption[train]'")

from ecap.errors import EcapError
from ecap.records import Dataset
from ecap.testing.tiny_trainer_data import colour_pairs, colour_preferences, training_context
from ecap_trl.config import Launcher
from ecap_trl.job import Job, Weights
from ecap_trl.launch import command, run_launched
from ecap_trl.trainers import DPOTrainer, SFTTrainer


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install 'editcaption[train]')",
)
@pytest.mark.parametrize(
    ("preset", "launcher", "module", "port"),
    [
        ("zero2", "torchrun", "torch.distributed.run", 29531),
        ("zero3", "deepspeed", "deepspeed.launcher.runner", 29532),
    ],
)
def test_deepspeed_on_two_cpu_processes_gives_a_model_that_loads(
    preset: str,
    launcher: str,
    module: str,
    port: int,
    tiny_qwen3_vl: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    items = colour_pairs(tmp_path, 16)
    metrics: list[tuple[int, dict[str, float]]] = []
    config = SFTTrainer.Config(
        base_model=str(tiny_qwen3_vl),
        learning_rate=1e-3,
        max_steps=6,
        batch_size=2,
        logging_steps=2,
        deepspeed=preset,
        launcher={"type": launcher, "nproc_per_node": 2, "master_port": port},
    )
    context = training_context(tmp_path, step_id="sft", metrics=metrics)
    dataset = Dataset(name="train", content_hash="sha256:test", format="items", count=16)

    with caplog.at_level(logging.INFO, logger="ecap.plugin"):
        model = SFTTrainer(config, context).train(items, dataset)

    trained = AutoModelForImageTextToText.from_pretrained(model.uri).state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl).state_dict()
    assert trained.keys() == base.keys()
    assert all(trained[k].shape == base[k].shape for k in base)  # gathered, not partitioned
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    assert [step for step, values in metrics if "loss" in values] == [2, 4, 6]
    assert model.meta["resolved"]["world_size"] == 2
    assert model.meta["resolved"]["deepspeed"].endswith(f"{preset}.json")
    # ZeRO-3 partitions the weights as they load; ZeRO-2 keeps whole parameters on every rank.
    assert model.meta["resolved"]["partitioned_load"] is (preset == "zero3")
    assert model.meta["global_step"] == 6
    logged = caplog.text
    assert f"launching: {sys.executable} -m {module}" in logged
    assert "step 6: loss=" in logged  # the child's own lines, streamed


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (pip install 'editcaption[train]')",
)
def test_dpo_under_zero2_on_two_cpu_processes(tiny_qwen3_vl: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    items, texts = colour_preferences(tmp_path, 8)
    metrics: list[tuple[int, dict[str, float]]] = []
    config = DPOTrainer.Config(
        model=str(tiny_qwen3_vl),
        learning_rate=1e-3,
        max_steps=4,
        batch_size=2,
        logging_steps=2,
        deepspeed="zero2",
        launcher={"type": "torchrun", "nproc_per_node": 2, "master_port": 29533},
    )
    context = training_context(tmp_path, step_id="dpo", records=texts, metrics=metrics)
    dataset = Dataset(name="train", content_hash="sha256:test", format="items", count=8)

    model = DPOTrainer(config, context).train(items, dataset)

    AutoModelForImageTextToText.from_pretrained(model.uri)
    margins = [values["rewards/margins"] for _, values in metrics if "rewards/margins" in values]
    assert len(margins) == 2 and margins[-1] > margins[0]
    assert model.meta["global_step"] == 4 and model.meta["resolved"]["world_size"] == 2


def test_a_failing_child_fails_the_step_with_its_last_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics_file = tmp_path / "metrics.jsonl"
    job = Job(
        kind="sft",
        config={"base_model": "m"},
        model=Weights(path="m"),
        work_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        metrics_file=str(metrics_file),
    )
    child = (
        "import json, sys\n"
        f"open({str(metrics_file)!r}, 'a').write(json.dumps({{'step': 1, 'values': "
        "{'loss': 2.5}}) + '\\n')\n"
        "print('step 1 done', flush=True)\n"
        "print('RuntimeError: out of patience')\n"
        "sys.exit(3)\n"
    )
    reported: list[tuple[int, dict[str, float]]] = []

    with (
        caplog.at_level(logging.INFO, logger="ecap.plugin"),
        pytest.raises(EcapError) as error,
    ):
        run_launched(
            job,
            [sys.executable, "-c", child],
            logging.getLogger("ecap.plugin"),
            lambda step, values: reported.append((step, values)),
        )

    assert "training exited with status 3" in str(error.value)
    assert "RuntimeError: out of patience" in str(error.value)
    assert "step 1 done" in caplog.text
    assert reported == [(1, {"loss": 2.5})]


def test_launcher_command_lines(tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    two_nodes = Launcher(
        type="torchrun", nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1"
    )
    assert command(two_nodes, job_file, use_cpu=False, hostfile=None)[1:] == [
        "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2",
        "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29500",
        "-m", "ecap_trl.worker", str(job_file),
    ]  # fmt: skip
    accelerate = command(two_nodes.model_copy(update={"type": "accelerate"}), job_file, False, None)
    assert accelerate[accelerate.index("--num_processes") + 1] == "16"
    assert "--multi_gpu" in accelerate and accelerate[-3:] == [
        "--module",
        "ecap_trl.worker",
        str(job_file),
    ]
    hostfile = tmp_path / "hosts"
    deepspeed = command(
        two_nodes.model_copy(update={"type": "deepspeed"}), job_file, False, hostfile
    )
    assert deepspeed[deepspeed.index("--hostfile") + 1] == str(hostfile)
    assert deepspeed[deepspeed.index("--num_gpus") + 1] == "8"


def test_accelerate_cannot_start_several_cpu_processes(tmp_path: Path) -> None:
    launcher = Launcher(type="accelerate", nproc_per_node=2)
    with pytest.raises(EcapError, match=r"use launcher\.type torchrun"):
        command(launcher, tmp_path / "job.json", use_cpu=True, hostfile=None)


def test_the_job_file_round_trips(tmp_path: Path) -> None:
    job = Job(
        kind="dpo",
        config={"model": "m", "beta": 0.2},
        model=Weights(path="/sft", base="/base", adapter=True),
        ref_model=Weights(path="/sft", base="/base", adapter=True),
        work_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
    )
    job.save(tmp_path / "job.json")
    assert Job.load(tmp_path / "job.json") == job
    assert json.loads((tmp_path / "job.json").read_text())["model"]["adapter"] is True
