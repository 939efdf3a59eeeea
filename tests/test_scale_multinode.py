"""Multi-node training with the ``ecap_trl`` launcher config, simulated on one machine: two
torchrun agents, one per "node" (``nnodes: 2``, ``node_rank`` 0 and 1, one process each), meet at
a rendezvous on 127.0.0.1 and train the job an SFT step wrote. The model they make is the one a
single node with two processes makes (same world size, same data shards), up to float tolerance
from the all-reduce, so spreading ranks over machines changes nothing but where they run.

When one node dies (its agent and rank SIGKILLed), the other stops too; started again, both
resume from the last checkpoint in the shared folder and end with the same model.

The job folder is shared by both nodes, as it must be on a cluster (a shared file system for the
datasets, checkpoints and the result); no ssh is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the trainers need TRL: pip install 'editcaption[train]'")

from ecap.records import Dataset
from ecap.testing.tiny_trainer_data import colour_pairs, training_context
from ecap_trl.config import Launcher
from ecap_trl.job import Job
from ecap_trl.launch import child_environment, command
from ecap_trl.trainers import SFTTrainer


def weights(folder: Path) -> dict[str, Any]:
    from transformers import AutoModelForImageTextToText

    return dict(AutoModelForImageTextToText.from_pretrained(folder).state_dict())


def one_node_of_two_processes(tmp_path: Path, tiny_model: Path, port: int) -> tuple[Path, Job]:
    """An SFT step trained by one torchrun node with two processes: its model folder, and its
    job (datasets, config) for the nodes to train again."""
    config = SFTTrainer.Config(
        base_model=str(tiny_model),
        learning_rate=1e-3,
        max_steps=4,
        batch_size=1,
        logging_steps=1,
        save_steps=1,  # a checkpoint per step: a node can die between any two
        launcher={"type": "torchrun", "nproc_per_node": 2, "master_port": port},
    )
    context = training_context(tmp_path, step_id="sft")
    dataset = Dataset(name="train", content_hash="sha256:test", format="items", count=8)
    model = SFTTrainer(config, context).train(colour_pairs(tmp_path, 8), dataset)
    return Path(model.uri), Job.load(Path(context.work_dir) / "job.json")


def shared_job(job: Job, folder: Path) -> Job:
    """The same job in a fresh folder that both "nodes" see."""
    shutil.copytree(job.data, folder / "data")
    job = job.model_copy(
        update={"work_dir": str(folder), "metrics_file": str(folder / "metrics.jsonl")}
    )
    job.save(folder / "job.json")
    return job


def start_node(job: Job, rank: int, port: int) -> subprocess.Popen[str]:
    """One node's torchrun agent (its own process group, so the node can be killed whole)."""
    launcher = Launcher(
        type="torchrun", nproc_per_node=1, nnodes=2, node_rank=rank, master_port=port
    )
    return subprocess.Popen(
        command(launcher, job.folder / "job.json", use_cpu=True, hostfile=None),
        env=child_environment(use_cpu=True),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_nodes(job: Job, port: int) -> None:
    nodes = [start_node(job, rank, port) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    assert job.result_file.is_file(), "global rank 0 (on node 0) wrote the result"


def assert_same_model(trained: Path, reference: Path, base: Path) -> None:
    import torch

    got, want, untrained = weights(trained), weights(reference), weights(base)
    assert got.keys() == want.keys()
    assert any(not torch.equal(want[k], untrained[k]) for k in want), "training changed it"
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_nodes_of_one_process_train_the_model_one_node_of_two_processes_trains(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    reference, job = one_node_of_two_processes(tmp_path, tiny_qwen3_vl, 29541)
    job = shared_job(job, tmp_path / "shared")

    run_nodes(job, 29542)

    assert_same_model(job.output, reference, tiny_qwen3_vl)


@pytest.mark.slow
def test_after_one_node_is_killed_both_nodes_restarted_resume_from_the_shared_checkpoint(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    reference, job = one_node_of_two_processes(tmp_path, tiny_qwen3_vl, 29543)
    job = shared_job(job, tmp_path / "shared")
    nodes = [start_node(job, rank, 29544) for rank in (0, 1)]
    deadline = time.monotonic() + 300
    while not (job.checkpoints / "checkpoint-2" / "trainer_state.json").is_file():
        assert all(n.poll() is None for n in nodes), "the training ended before the kill"
        assert time.monotonic() < deadline, "no checkpoint-2 in time"
        time.sleep(0.05)
    os.killpg(nodes[1].pid, signal.SIGKILL)  # node 1 dies: its agent and its rank
    nodes[1].communicate()
    nodes[0].communicate(timeout=300)
    assert nodes[0].returncode != 0, "node 0 notices its peer is gone and stops"
    assert not job.result_file.exists()

    run_nodes(job, 29545)  # both nodes started again, as a scheduler would

    resumed = json.loads(job.result_file.read_text())
    assert resumed["resumed_from"] is not None and resumed["resumed_from"] != "checkpoint-4"
    assert_same_model(job.output, reference, tiny_qwen3_vl)
