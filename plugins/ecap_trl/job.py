"""A training job as plain data: everything a training process needs, and nothing it must ask
the runner for. The step writes it to ``work_dir/job.json``; the in-process path and every rank
of a launched run read the same description, so both train identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Weights(BaseModel):
    """What to load: a folder or hub id, and the base under it when it is a LoRA adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    base: str | None = None
    adapter: bool = False


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sft", "dpo"]
    #: The plugin's config, as validated by the step (``model_dump(mode="json")``).
    config: dict[str, Any]
    model: Weights
    ref_model: Weights | None = None
    work_dir: str
    #: Resolved here, not by each process: a CPU machine never asks for bf16 or CUDA.
    use_cpu: bool
    bf16: bool
    #: The DeepSpeed JSON file to use (a preset or the user's), already checked to parse.
    deepspeed: str | None = None
    #: Where rank 0 appends one JSON object per logging step, for the step to report.
    metrics_file: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.work_dir)

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def output(self) -> Path:
        return self.folder / "model"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def result_file(self) -> Path:
        return self.folder / "result.json"

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls.model_validate_json(path.read_text())
