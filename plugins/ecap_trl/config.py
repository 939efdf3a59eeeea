"""The ``with:`` blocks of the ``sft`` and ``dpo`` trainers.

Everything that changes the trained weights is part of the step's cache key. Fields that only
change how the run is watched or how fast data flows (logging interval, dataloader workers, how
often checkpoints are written, where the rendezvous listens) are :func:`transport_field`: changing
them resumes or reuses a training instead of starting a new one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ecap.interfaces import PluginConfig, transport_field
from ecap.models import ModelRef

#: Asked for every pair at training time. A captioner sampling the trained model should be asked
#: the same words, in the same layout (source label, source image, target label, target image,
#: prompt), or it sees a question it was never trained on.
DEFAULT_TRAINING_PROMPT = (
    "The first image is the SOURCE, before an edit. The second image is the TARGET, the same "
    "picture after the edit. Write the instruction a person would give an image editor to turn "
    "the source into the target. Answer with the instruction only."
)

#: Presets shipped in ``ecap_trl/deepspeed/`` (``zero3-offload`` moves optimizer states and
#: parameters to CPU memory).
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3-offload")

#: The language model's projections in Qwen-VL and most decoder VLMs; the vision tower's layers
#: have other names and stay frozen.
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(PluginConfig):
    """Train a LoRA adapter instead of every weight (QLoRA with ``load_in_4bit``)."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: int = Field(32, ge=1, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        description="module names to adapt, or 'all-linear' (vision tower included)",
    )
    load_in_4bit: bool = Field(
        False, description="QLoRA: load the frozen base in 4-bit NF4 (CUDA and bitsandbytes)"
    )
    merge: bool = Field(
        False, description="save the adapter merged into full weights instead of the adapter"
    )


class Launcher(PluginConfig):
    """How training processes start. ``none`` trains inside the ecap process (one device)."""

    type: Literal["none", "torchrun", "accelerate", "deepspeed"] = "none"
    nproc_per_node: int = Field(1, ge=1, description="training processes (devices) per node")
    nnodes: int = Field(1, ge=1)
    node_rank: int = transport_field(0, ge=0, description="this machine's rank among the nodes")
    master_addr: str = transport_field("127.0.0.1", description="rendezvous address (node 0)")
    master_port: int = transport_field(29500, ge=1, le=65535)
    hostfile: str | None = transport_field(
        None, description="DeepSpeed launcher hostfile, relative to the spec's folder"
    )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class TrainerConfig(PluginConfig):
    """What SFT and DPO share."""

    prompt: str = Field(
        DEFAULT_TRAINING_PROMPT,
        description="the question asked for every pair; use the captioner's prompt at sampling",
    )
    system: str | None = Field(None, description="system turn before the question, if any")
    source_label: str | None = Field("Source image:", description="text before the source image")
    target_label: str | None = Field("Target image:", description="text before the target image")
    max_pixels: int | None = Field(
        None, ge=1, description="scale images down to at most this many pixels (aspect kept)"
    )
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter; unset: full weights")
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler: str = Field("linear", description="transformers scheduler name")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(1, ge=1, description="rows per device per forward pass")
    gradient_accumulation: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0)
    max_length: int | None = Field(
        None, ge=1, description="truncate longer rows (image tokens included); unset: never"
    )
    answer_only_loss: bool = Field(
        True, description="loss on the answer's tokens only, not on the prompt or image tokens"
    )
    gradient_checkpointing: bool = False
    bf16: bool | None = Field(
        None, description="bfloat16 mixed precision; unset: on when a CUDA device supports it"
    )
    use_liger_kernel: bool = Field(False, description="Liger fused kernels (liger-kernel, CUDA)")
    deepspeed: str | None = Field(
        None,
        description=f"a preset ({', '.join(DEEPSPEED_PRESETS)}) or a DeepSpeed JSON file "
        "relative to the spec's folder",
    )
    launcher: Launcher = Field(default_factory=Launcher)
    validation_fraction: float = Field(
        0.0, ge=0, lt=1, description="pairs held out for validation, chosen by pair id hash"
    )
    held_out: Literal["refuse", "leave_out"] = Field(
        "refuse",
        description="input pairs held out for testing (declared test by their source, or in "
        "a frozen test split): refuse fails the step before training, leave_out trains "
        "without them",
    )
    seed: int = 0
    logging_steps: int = transport_field(10, ge=1, description="report metrics every N steps")
    save_steps: int = transport_field(
        500, ge=1, description="write a checkpoint (to resume from) every N steps"
    )
    save_total_limit: int | None = transport_field(
        2, ge=1, description="checkpoints kept on disk; older ones are deleted"
    )
    dataloader_workers: int = transport_field(0, ge=0)

    @model_validator(mode="after")
    def _one_launcher_for_many_processes(self) -> TrainerConfig:
        if self.launcher.world_size > 1 and self.launcher.type == "none":
            raise ValueError(
                "launcher.nproc_per_node/nnodes > 1 need launcher.type torchrun, accelerate or "
                "deepspeed"
            )
        return self


class SFTConfig(TrainerConfig):
    """Supervised fine-tuning on (pair, instruction)."""

    base_model: ModelRef = Field(
        description="hub id, local folder (relative to the spec), or {step: NAME} of a train step"
    )
    learning_rate: float = Field(2e-5, gt=0)


class DPOConfig(TrainerConfig):
    """Direct preference optimisation on (pair, chosen, rejected)."""

    model: ModelRef = Field(description="the policy to start from, usually {step: sft}")
    ref_model: ModelRef | None = Field(
        None, description="the frozen reference; unset: a frozen copy of `model`"
    )
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference")
    loss_type: list[str] = Field(
        default_factory=lambda: ["sigmoid"],
        description="TRL DPO loss(es): sigmoid, ipo, hinge, robust, ...",
    )
    learning_rate: float = Field(1e-6, gt=0)
