"""The ``sft`` and ``dpo`` trainers: a frozen dataset and a model in, a trained Model record out.

A step checks everything it can before any weights load (the models exist, the DeepSpeed file
parses, no CUDA-only option on a CPU machine, every image is readable), writes the rows and a
:class:`~ecap_trl.job.Job` into its work directory, then trains in-process (one device) or
through a launcher. The work directory belongs to the step's cache key, so a killed run started
again finds its checkpoints and resumes from the last one.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from ecap.errors import EcapError
from ecap.hashing import canonical_json
from ecap.interfaces import Trainer, require
from ecap.models import ModelRef, ResolvedModel, file_hash, folder_hash
from ecap.records import Dataset, Item, Model

from . import engine, launch
from .config import DEEPSPEED_PRESETS, DPOConfig, SFTConfig, TrainerConfig
from .job import Job, Weights
from .rows import Row, Split, dpo_rows, sft_rows, split_rows

PRESETS_DIR = Path(__file__).parent / "deepspeed"


class TRLTrainer(Trainer):
    """What ``sft`` and ``dpo`` share: checks, the job, launching and the Model record."""

    kind_name: ClassVar[str]
    config: TrainerConfig

    # -- what each trainer defines ----------------------------------------------------------

    def model_fields(self) -> dict[str, ModelRef | None]:
        """Config field name -> the model it names; the first one is the policy."""
        raise NotImplementedError

    def rows(self, items: Sequence[Item]) -> list[tuple[str, Row]]:
        raise NotImplementedError

    def held_out_policy(self) -> Literal["refuse", "leave_out"]:
        return self.config.held_out

    # -- the shared run ---------------------------------------------------------------------

    def fingerprint(self) -> str | None:
        """What the config's words do not pin down: the content hash of each local model folder
        (new weights behind the same path retrain) and the DeepSpeed file's bytes. A
        ``{step: NAME}`` model is the upstream step's, which the runner keys itself."""
        parts = [
            f"{name}={self.resolve(name, ref).identity.label()}"
            for name, ref in self.model_fields().items()
            if isinstance(ref, str)
        ]
        path = self.deepspeed_file()
        if path:
            parts.append(f"deepspeed={file_hash(path)}")
        return "\n".join(parts) or None

    def train(self, items: Sequence[Item], dataset: Dataset) -> Model:
        use_cpu = not _cuda_available()
        bf16 = self.check_devices(use_cpu)
        deepspeed = self.deepspeed_file()
        resolved = {
            name: self.resolve(name, ref)
            for name, ref in self.model_fields().items()
            if ref is not None
        }
        cmd = None
        if self.launched():
            job_file = Path(self.context.work_dir).resolve() / "job.json"
            cmd = launch.command(self.config.launcher, job_file, use_cpu, self.hostfile())
        split = split_rows(self.rows(items), self.config.validation_fraction)
        job = self.write_job(split, resolved, use_cpu, bf16, deepspeed)
        self.context.logger.info(
            "%s %s: %d training rows, %d validation rows, work dir %s",
            self.kind_name,
            self.context.step_id,
            len(split.train),
            len(split.validation),
            job.work_dir,
        )
        if cmd is not None:
            result = launch.run_launched(job, cmd, self.context.logger, self.context.log_metrics)
        else:
            result = engine.run(job, self.context.log_metrics)
        return self.model_record(job, result, resolved, split, dataset)

    def launched(self) -> bool:
        """Child processes for a launcher, several processes, or DeepSpeed (whose process group
        must not live in the ecap process)."""
        return self.config.launcher.type != "none" or self.config.deepspeed is not None

    def check_devices(self, use_cpu: bool) -> bool:
        """The resolved bf16 flag; CUDA-only options on a CPU machine are refused by name."""
        config = self.config
        if use_cpu and config.bf16:
            raise EcapError(
                f"{self.kind_name}: bf16: true needs a CUDA device and this machine has none; "
                "remove it (or set bf16: false) to train in float32 on CPU"
            )
        if use_cpu and config.lora and config.lora.load_in_4bit:
            raise EcapError(
                f"{self.kind_name}: lora.load_in_4bit (QLoRA) needs a CUDA device and "
                "bitsandbytes; this machine has no CUDA device"
            )
        if config.lora and config.lora.load_in_4bit:
            require("bitsandbytes", "train", self.kind_name)
        if config.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
            raise EcapError(
                f"{self.kind_name}: use_liger_kernel: true needs the liger-kernel package "
                "(pip install liger-kernel), which is not installed"
            )
        if config.bf16 is None:
            return not use_cpu and _bf16_supported()
        return config.bf16

    def deepspeed_file(self) -> Path | None:
        """The DeepSpeed JSON to use, checked to parse: a shipped preset or the user's file."""
        name = self.config.deepspeed
        if name is None:
            return None
        if name in DEEPSPEED_PRESETS:
            return PRESETS_DIR / f"{name}.json"
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = self.context.base_dir / path
        if not path.is_file():
            raise EcapError(
                f"{self.kind_name}: deepspeed: {name!r} is neither a preset "
                f"({', '.join(DEEPSPEED_PRESETS)}) nor a file ({path} does not exist)"
            )
        try:
            parsed = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EcapError(
                f"{self.kind_name}: deepspeed: {path} is not valid JSON ({exc})"
            ) from exc
        if not isinstance(parsed, dict):
            raise EcapError(f"{self.kind_name}: deepspeed: {path} must hold a JSON object")
        return path.resolve()

    def hostfile(self) -> Path | None:
        name = self.config.launcher.hostfile
        if name is None:
            return None
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.context.base_dir / path
        if not path.is_file():
            raise EcapError(f"{self.kind_name}: launcher.hostfile: {path} does not exist")
        return path

    def resolve(self, field: str, ref: ModelRef) -> ResolvedModel:
        """A model field made concrete, or an error naming the field."""
        try:
            resolved: ResolvedModel = self.context.model(ref)
        except EcapError as exc:
            raise EcapError(f"{self.kind_name}: {field}: {exc}") from exc
        if resolved.adapter and not resolved.base:
            raise EcapError(
                f"{self.kind_name}: {field}: {resolved.path} is a LoRA adapter with no known base"
            )
        return resolved

    def write_job(
        self,
        split: Split,
        resolved: dict[str, ResolvedModel],
        use_cpu: bool,
        bf16: bool,
        deepspeed: Path | None,
    ) -> Job:
        """Rows as HF datasets and the job description, in the work directory. The rows are
        rewritten on every attempt: they are a function of the items, which the cache key fixes."""
        datasets = require("datasets", "train", self.kind_name)
        work = Path(self.context.work_dir)
        weights = [_weights(r) for r in resolved.values()]
        job = Job(
            kind=self.kind_name,
            config=self.config.model_dump(mode="json"),
            model=weights[0],
            ref_model=weights[1] if len(weights) > 1 else None,
            work_dir=str(work.resolve()),
            use_cpu=use_cpu,
            bf16=bf16,
            deepspeed=str(deepspeed) if deepspeed else None,
            metrics_file=str((work / "metrics.jsonl").resolve()) if self.launched() else None,
        )
        for name, rows in (("train", split.train), ("validation", split.validation)):
            target = job.data / name
            if rows:
                datasets.Dataset.from_list(rows).save_to_disk(str(target))
            elif target.exists():
                import shutil

                shutil.rmtree(target)
        job.save(work / "job.json")
        return job

    def model_record(
        self,
        job: Job,
        result: dict[str, Any],
        resolved: dict[str, ResolvedModel],
        split: Split,
        dataset: Dataset,
    ) -> Model:
        """The trained model, with what a report or ``provenance show`` needs to explain it."""
        config = self.config
        policy = next(iter(resolved.values()))
        adapter = bool(config.lora and not config.lora.merge)
        base_path = (policy.base or policy.path) if adapter else None
        content_hash = folder_hash(job.output)
        checkpoints = [
            {
                "name": name,
                "step": int(name.split("-")[-1]),
                "content_hash": folder_hash(job.checkpoints / name),
            }
            for name in result["checkpoints"]
            if (job.checkpoints / name).is_dir()
        ]
        meta = {
            "trainer": self.kind_name,
            "models": {
                name: {
                    "path": r.path,
                    "identity": r.identity.as_dict(),
                    "record_id": r.record_id,
                    "adapter": r.adapter,
                    "base": r.base,
                }
                for name, r in resolved.items()
            },
            "adapter": adapter,
            "base_path": base_path,
            "content_hash": content_hash,
            "config": json.loads(canonical_json(config.model_dump(mode="json"))),
            "resolved": {
                "use_cpu": job.use_cpu,
                "bf16": job.bf16,
                "deepspeed": job.deepspeed,
                "world_size": config.launcher.world_size,
                # Whether the weights loaded partitioned across ranks (ZeRO-3's zero.Init).
                "partitioned_load": bool(result.get("partitioned_load", False)),
            },
            "dataset": {"id": dataset.id, "content_hash": dataset.content_hash},
            "split": {
                "validation_fraction": config.validation_fraction,
                "train_pairs": split.train_pairs,
                "validation_pairs": split.validation_pairs,
            },
            "global_step": result["global_step"],
            "resumed_from": result.get("resumed_from"),
            "metrics": result["metrics"],
            "checkpoints": checkpoints,
        }
        return Model(
            name=self.context.step_id,
            uri=str(job.output),
            revision=None,
            base_model_id=policy.record_id,
            dataset_id=dataset.id,
            meta=meta,
        )


class SFTTrainer(TRLTrainer):
    """Supervised fine-tuning of a VLM on (pair, instruction) with TRL: the pair's two images
    and the prompt in, the instruction as the answer to learn."""

    kind_name = "sft"
    Config = SFTConfig
    config: SFTConfig

    def model_fields(self) -> dict[str, ModelRef | None]:
        return {"base_model": self.config.base_model}

    def rows(self, items: Sequence[Item]) -> list[tuple[str, Row]]:
        return sft_rows(items, self.config)


class DPOTrainer(TRLTrainer):
    """Direct preference optimisation of a VLM on (pair, chosen, rejected) with TRL, against a
    frozen reference (by default a copy of the starting model)."""

    kind_name = "dpo"
    Config = DPOConfig
    config: DPOConfig

    def model_fields(self) -> dict[str, ModelRef | None]:
        return {"model": self.config.model, "ref_model": self.config.ref_model}

    def rows(self, items: Sequence[Item]) -> list[tuple[str, Row]]:
        return dpo_rows(items, self.config, self.context.records)


def _weights(resolved: ResolvedModel) -> Weights:
    return Weights(path=resolved.path, base=resolved.base, adapter=resolved.adapter)


def _cuda_available() -> bool:
    torch = require("torch", "train")
    return bool(torch.cuda.is_available())


def _bf16_supported() -> bool:
    torch = require("torch", "train")
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


__all__ = ["DPOTrainer", "SFTTrainer", "TRLTrainer"]
