"""One training run of a :class:`~ecap_trl.job.Job` with TRL: load, train (resuming from the last
checkpoint in the work directory), save. Runs in the ecap process or in each launched rank.

Heavy imports happen inside the functions: importing this module costs nothing.

**Models that are LoRA adapters.** A policy that is itself an adapter (an SFT step trained with
``lora``) keeps training that same adapter when the config asks for LoRA, so the result is still a
small adapter on the original base; with full fine-tuning it is merged into its base first. A
reference that is an adapter is merged into its base and frozen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecap.errors import EcapError
from ecap.interfaces import require

from .config import DPOConfig, LoraSettings, SFTConfig, TrainerConfig
from .job import Job, Weights

MetricsSink = Callable[[int, dict[str, float]], None]


def plugin_config(job: Job) -> TrainerConfig:
    return (SFTConfig if job.kind == "sft" else DPOConfig).model_validate(job.config)


def run(job: Job, sink: MetricsSink | None) -> dict[str, Any]:
    """Train and save to ``job.output``. Returns what the step records: the global step, the
    final metrics and the checkpoints written. Only the main process's return value matters.
    Logged numbers reach the step through ``sink`` alone (transformers' printing is off)."""
    trl = require("trl", "train", job.kind)
    datasets = require("datasets", "train", job.kind)
    config = plugin_config(job)
    # The arguments first: under ZeRO-3 their DeepSpeed config makes from_pretrained partition
    # the weights across ranks as they load (zero.Init), instead of every rank holding a full
    # copy before DeepSpeed partitions it.
    args = training_arguments(job, config, trl)
    if job.deepspeed:  # join the process group now, so that zero.Init sees every rank
        require("deepspeed", "train", job.kind).init_distributed(
            dist_backend="gloo" if job.use_cpu else "nccl"
        )
    processor = load_processor(job.model)
    model = load_policy(job.model, config.lora, job.bf16)
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    train_data = datasets.load_from_disk(str(job.data / "train"))
    eval_path = job.data / "validation"
    eval_data = datasets.load_from_disk(str(eval_path)) if eval_path.exists() else None
    callback = metrics_callback(sink)
    if job.kind == "sft":
        trainer = trl.SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            processing_class=processor,  # TRL's AutoProcessor may return a bare tokenizer
            callbacks=[callback],
        )
    else:
        trainer = trl.DPOTrainer(
            model=model,
            ref_model=load_reference(job, config),
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            processing_class=processor,
            callbacks=[callback],
        )
    trainer.remove_callback(require("transformers", "train").PrinterCallback)
    last = last_checkpoint(job.checkpoints)
    output = trainer.train(resume_from_checkpoint=str(last) if last else None)
    metrics = {k: float(v) for k, v in output.metrics.items() if _number(v)}
    if eval_data is not None:
        evaluated = trainer.evaluate()
        metrics.update({k: float(v) for k, v in evaluated.items() if _number(v)})
    save_model(trainer, processor, job, config.lora)
    return {
        "global_step": int(trainer.state.global_step),
        "resumed_from": last.name if last else None,
        "partitioned_load": partitioned,
        "metrics": metrics,
        "checkpoints": [p.name for p in checkpoints(job.checkpoints)],
    }


def training_arguments(job: Job, config: TrainerConfig, trl: Any) -> Any:
    """TRL's config from ours. ``use_cpu`` is required on CPU (TRL asks for bf16 otherwise), and
    ``max_length`` is left unset unless asked: truncating a VLM row can cut its image tokens."""
    common: dict[str, Any] = {
        "output_dir": str(job.checkpoints),
        "use_cpu": job.use_cpu,
        "bf16": job.bf16,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a ratio of all steps
        "weight_decay": config.weight_decay,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "max_grad_norm": config.max_grad_norm,
        "gradient_checkpointing": config.gradient_checkpointing,
        "use_liger_kernel": config.use_liger_kernel,
        "deepspeed": job.deepspeed,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "dataloader_num_workers": config.dataloader_workers,
        "eval_strategy": "no",
        "report_to": "none",
        "max_length": config.max_length,
        "disable_tqdm": True,
    }
    if isinstance(config, SFTConfig):
        # Prompt-completion rows mask the prompt by themselves (any chat template); messages
        # rows are trained on whole.
        return trl.SFTConfig(**common, completion_only_loss=config.answer_only_loss)
    assert isinstance(config, DPOConfig)
    return trl.DPOConfig(**common, beta=config.beta, loss_type=list(config.loss_type))


def load_processor(weights: Weights) -> Any:
    """The processor saved with the weights (an adapter folder carries one too), else the
    base's. Without torchvision the stock Qwen-VL processors cannot be built (their video
    processor needs it); the same class is then built from the tokenizer and image processor."""
    transformers = require("transformers", "train")
    sources = [weights.path] + ([weights.base] if weights.base else [])
    source = next((s for s in sources if _has_processor(s)), weights.base or weights.path)
    try:
        processor = transformers.AutoProcessor.from_pretrained(source)
    except (ImportError, OSError, AttributeError, ValueError) as exc:
        if "video" not in str(exc).lower() and "torchvision" not in str(exc).lower():
            raise
        processor = None
    if processor is None or not hasattr(processor, "image_processor"):
        processor = _image_only_processor(transformers, source)
    return processor


def _has_processor(source: str) -> bool:
    folder = Path(source)
    return (folder / "processor_config.json").is_file() or (
        folder / "preprocessor_config.json"
    ).is_file()


def _image_only_processor(transformers: Any, source: str) -> Any:
    """The folder's processor class without its video processor, named as the stock class so
    that the folder it is saved to loads anywhere."""
    name = _processor_class(source)
    stock = getattr(transformers, name, None) if name else None
    if stock is None:
        raise EcapError(f"{source}: cannot build a processor (processor_class {name!r})")

    class ImageOnly(stock):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **extra: Any):
            extra.pop("video_processor", None)
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, video_processor=None, **extra
            )

    ImageOnly.__name__ = ImageOnly.__qualname__ = stock.__name__
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    image_processor = transformers.AutoImageProcessor.from_pretrained(source)
    return ImageOnly(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def _processor_class(source: str) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = Path(source) / name
        if path.is_file():
            found = json.loads(path.read_text()).get("processor_class")
            if found:
                return str(found)
    return None


def _load_full(path: str, bf16: bool, quantize: bool = False) -> Any:
    transformers = require("transformers", "train")
    torch = require("torch", "train")
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quantize:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32,
        )
    return transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs)


def load_policy(weights: Weights, lora: LoraSettings | None, bf16: bool) -> Any:
    """The model to train: full weights, a new LoRA adapter on them, or an adapter trained on."""
    peft = require("peft", "train") if lora or weights.adapter else None
    quantize = bool(lora and lora.load_in_4bit)
    if weights.adapter:
        assert peft is not None and weights.base is not None
        base = _load_full(weights.base, bf16, quantize)
        if lora:
            return peft.PeftModel.from_pretrained(base, weights.path, is_trainable=True)
        return peft.PeftModel.from_pretrained(base, weights.path).merge_and_unload()
    model = _load_full(weights.path, bf16, quantize)
    if lora is None:
        return model
    assert peft is not None
    if quantize:
        model = peft.prepare_model_for_kbit_training(model)
    return peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )


def load_reference(job: Job, config: TrainerConfig) -> Any:
    """The frozen reference for DPO, always a model of its own (TRL refuses the policy itself).
    ``None`` only when the policy is a fresh adapter on exactly the reference's weights: TRL then
    uses the policy with its adapter switched off, which is that reference, at no extra memory."""
    ref = job.ref_model or job.model
    fresh_adapter = config.lora is not None and not job.model.adapter
    if fresh_adapter and ref == job.model:
        return None
    if ref.adapter:
        peft = require("peft", "train")
        assert ref.base is not None
        model = peft.PeftModel.from_pretrained(_load_full(ref.base, job.bf16), ref.path)
        model = model.merge_and_unload()
    else:
        model = _load_full(ref.path, job.bf16)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def save_model(trainer: Any, processor: Any, job: Job, lora: LoraSettings | None) -> None:
    """The final weights (or adapter) and the processor, to ``job.output``; with
    ``lora.merge`` the adapter is merged into full weights first."""
    if lora and lora.merge:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(job.output)
    else:
        trainer.save_model(str(job.output))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(job.output))


def checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders that were completely written, by step."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def last_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def metrics_callback(sink: MetricsSink | None) -> Any:
    """A transformers callback handing each logging step's numbers to ``sink`` on the main
    process, with ``tokens_per_second`` from the tokens TRL counts between two logs."""
    transformers = require("transformers", "train")

    class ReportMetrics(transformers.TrainerCallback):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self.tokens: float | None = None
            self.since = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.tokens = 0.0  # TRL counts tokens from the start of this process
            self.since = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if sink is None or not state.is_world_process_zero or not logs:
                return
            values = {k: float(v) for k, v in logs.items() if _number(v)}
            now = time.perf_counter()
            tokens = values.get("num_tokens")
            if tokens is not None:
                if self.tokens is not None and tokens > self.tokens and now > self.since:
                    values["tokens_per_second"] = (tokens - self.tokens) / (now - self.since)
                self.tokens = tokens
            self.since = now
            sink(int(state.global_step), values)

    return ReportMetrics()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
