"""Training in child processes started by torchrun, accelerate or the DeepSpeed launcher.

The step has already written ``job.json`` and the datasets into the work directory. Every rank
runs ``python -m ecap_trl.worker job.json``; rank 0 appends metrics to a JSONL file, which is
read as the child runs and reported through the step's ``log_metrics``. The child's output
goes to the step's logger line by line; a non-zero exit fails the step with its last lines.

On a CPU machine, DeepSpeed needs ``DS_ACCELERATOR=cpu`` (it otherwise probes for GPUs) and
talks over gloo; the launchers provide the rendezvous variables (``MASTER_ADDR``, ``RANK``, ...)
without which DeepSpeed falls back to MPI discovery.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecap.errors import EcapError

from .config import Launcher
from .job import Job

WORKER_MODULE = "ecap_trl.worker"
#: How many of the child's last output lines a failure shows.
TAIL_LINES = 30


def command(launcher: Launcher, job_file: Path, use_cpu: bool, hostfile: Path | None) -> list[str]:
    """The command line that starts every rank of ``job_file`` with this launcher, or an
    error for a combination that cannot work here."""
    python = sys.executable
    worker = [WORKER_MODULE, str(job_file)]
    if launcher.type == "accelerate":
        if use_cpu and launcher.world_size > 1:
            raise EcapError(
                "launcher.type accelerate starts several CPU processes only through mpirun; "
                "use launcher.type torchrun on a machine without CUDA devices"
            )
        cmd = [
            python, "-m", "accelerate.commands.launch",
            "--num_processes", str(launcher.world_size),
            "--num_machines", str(launcher.nnodes),
            "--machine_rank", str(launcher.node_rank),
            "--main_process_ip", launcher.master_addr,
            "--main_process_port", str(launcher.master_port),
        ]  # fmt: skip
        if use_cpu:
            cmd.append("--cpu")
        elif launcher.world_size > 1:
            cmd.append("--multi_gpu")
        return [*cmd, "--module", *worker]
    if launcher.type == "deepspeed":
        cmd = [
            python, "-m", "deepspeed.launcher.runner",
            "--num_gpus", str(launcher.nproc_per_node),
            "--num_nodes", str(launcher.nnodes),
            "--node_rank", str(launcher.node_rank),
            "--master_addr", launcher.master_addr,
            "--master_port", str(launcher.master_port),
        ]  # fmt: skip
        if hostfile is not None:
            cmd += ["--hostfile", str(hostfile)]
        return [*cmd, "--module", *worker]
    return [
        python, "-m", "torch.distributed.run",
        "--nproc_per_node", str(launcher.nproc_per_node),
        "--nnodes", str(launcher.nnodes),
        "--node_rank", str(launcher.node_rank),
        "--master_addr", launcher.master_addr,
        "--master_port", str(launcher.master_port),
        "-m", *worker,
    ]  # fmt: skip


def child_environment(use_cpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    if use_cpu:
        env["DS_ACCELERATOR"] = "cpu"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the process that started it dies, so a killed step
    never leaves a training writing checkpoints beside the one that resumes it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_launched(
    job: Job,
    cmd: list[str],
    logger: logging.Logger,
    report: Callable[[int, dict[str, float]], None] | None,
) -> dict[str, Any]:
    """Run ``cmd`` to completion, streaming its output and metrics; the worker's result."""
    assert job.metrics_file is not None
    metrics = Path(job.metrics_file)
    metrics.write_text("")  # a killed earlier attempt's lines were reported by that attempt
    job.result_file.unlink(missing_ok=True)
    logger.info("launching: %s", " ".join(cmd))
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_environment(job.use_cpu),
        preexec_fn=die_with_parent,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    follower = MetricsFollower(metrics, report)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            logger.info("%s", line)
            follower.drain()  # rank 0 prints each log as it writes its metrics line
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    follower.drain()
    if returncode != 0:
        raise EcapError(
            f"training exited with status {returncode}; its last lines:\n" + "\n".join(tail)
        )
    if not job.result_file.is_file():
        raise EcapError(f"training exited without writing {job.result_file}")
    result: dict[str, Any] = json.loads(job.result_file.read_text())
    return result


class MetricsFollower:
    """Reports each complete line of the child's metrics file once, on the calling thread (the
    step's ``log_metrics`` may write to the store, whose connection belongs to that thread)."""

    def __init__(self, path: Path, report: Callable[[int, dict[str, float]], None] | None) -> None:
        self.path = path
        self.report = report
        self.offset = 0

    def drain(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self.offset)
            while (line := handle.readline()).endswith("\n"):
                self.offset = handle.tell()
                entry = json.loads(line)
                if self.report is not None:
                    self.report(int(entry["step"]), dict(entry["values"]))
