"""Training throughput: tokens per second of the ``sft`` step against a plain TRL script.

Run from the repository root (needs the ``train`` extra)::

    python benchmarks/train_throughput.py                          # CPU, tiny random Qwen3-VL
    python benchmarks/train_throughput.py --steps 20 --repeats 1   # a quick smoke run
    python benchmarks/train_throughput.py --device cuda --model 2B # GPU, 2B-class Qwen3-VL

**CPU mode.** Both sides train the tiny random Qwen3-VL fixture on the same rows (synthetic
colour-square pairs, two ``--image-size`` px images each, built by :func:`ecap_trl.rows.sft_rows`)
for ``--steps`` optimizer steps of ``--batch-size`` rows, same seed, same hyperparameters, answer-
only loss, no checkpoint on the way:

1. *plain TRL*: a script that loads the model with ``from_pretrained``, builds an HF dataset from
   the rows, runs ``trl.SFTTrainer`` and saves the model;
2. *ecap sft*: the ``sft`` plugin's ``train()`` on the items (image preparation, the dataset
   written to its work directory, the job, metrics callback, Model record with content hashes).

Each side runs ``--repeats`` times, alternating; the best run of each is kept (the machine may be
shared). Printed: tokens/s over the training loop (TRL's token count / HF's ``train_runtime``),
tokens/s end to end (everything each side does, loading and saving included), and ecap's ratio to
plain on both. The issue's goal: ratio >= 0.95 (ecap adds at most 5 %).

**GPU mode** (``--device cuda``): ``--model`` is a folder or a Qwen3-VL size (2B, 4B, 8B, 32B) for
which a random-weight model of the real architecture is built (see ``caption_throughput.py``).
Rows are two ``--image-size`` px images (default 512: about 645 tokens a row) in batches of 8.
Measured: plain TRL, ecap sft, ecap sft with Liger kernels (when ``liger-kernel`` is installed)
and ecap sft with DeepSpeed ZeRO-2 on one process (when ``deepspeed`` is installed), all bf16 with
full fine-tuning; whatever is missing is said and skipped. MFU is ``6 x parameters x tokens/s``
over the H200's 989 TFLOP/s bf16 dense peak (attention's own FLOPs are left out, as usual).
Anchor on one H200, plain transformers with fused AdamW, batch 8 x 645 tokens, 2.4B Qwen3-VL-class:
14.1K tokens/s, 20.8 % MFU; goal: >= 40 % MFU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ecap.records import Dataset, Item
from ecap.testing.tiny_trainer_data import colour_pairs, training_context
from ecap.testing.tiny_vlm import build_tiny_vlm

PEAK_FLOPS = 989e12  # H200 bf16 dense
GOAL_RATIO = 0.95
GOAL_MFU = 0.40


def settings(args: argparse.Namespace, model: str, **extra: Any) -> dict[str, Any]:
    """The ``sft`` config both sides share."""
    return {
        "base_model": model,
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "logging_steps": max(1, args.steps // 10),
        "save_steps": args.steps + 1,  # the final save only
        "seed": 0,
        **extra,
    }


def run_plain(items: list[Item], config: dict[str, Any], work: Path, gpu: bool) -> dict[str, float]:
    """A plain TRL script on the same rows: what a user would write without ecap."""
    import datasets
    import torch
    import trl
    from transformers import AutoModelForImageTextToText, PrinterCallback

    from ecap_trl.config import SFTConfig
    from ecap_trl.engine import load_processor
    from ecap_trl.job import Weights
    from ecap_trl.rows import sft_rows

    start = time.perf_counter()
    ours = SFTConfig(**config)
    rows = [row for _, row in sft_rows(items, ours)]
    dataset = datasets.Dataset.from_list(rows)
    model = AutoModelForImageTextToText.from_pretrained(ours.base_model, dtype=torch.float32)
    processor = load_processor(Weights(path=str(ours.base_model)))  # no torchvision needed
    trainer = trl.SFTTrainer(
        model=model,
        args=trl.SFTConfig(
            output_dir=str(work / "plain"),
            use_cpu=not gpu,
            bf16=gpu,
            learning_rate=ours.learning_rate,
            lr_scheduler_type=ours.lr_scheduler,
            max_steps=ours.max_steps,
            per_device_train_batch_size=ours.batch_size,
            logging_steps=ours.logging_steps,
            save_strategy="no",
            report_to="none",
            max_length=None,
            gradient_checkpointing=False,
            completion_only_loss=True,
            seed=0,
            disable_tqdm=True,
            use_liger_kernel=ours.use_liger_kernel,
        ),
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.remove_callback(PrinterCallback)  # ecap prints nothing either
    output = trainer.train()
    trainer.save_model(str(work / "plain" / "model"))
    wall = time.perf_counter() - start
    tokens = max(e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e)
    return {"tokens": tokens, "loop_s": output.metrics["train_runtime"], "wall_s": wall}


def run_ecap(items: list[Item], config: dict[str, Any], work: Path) -> dict[str, float]:
    """The ``sft`` step, as the runner calls it."""
    from ecap_trl.trainers import SFTTrainer

    metrics: list[tuple[int, dict[str, float]]] = []
    context = training_context(work, step_id=f"ecap-{time.monotonic_ns()}", metrics=metrics)
    dataset = Dataset(name="bench", content_hash="sha256:bench", format="items", count=len(items))
    start = time.perf_counter()
    model = SFTTrainer(SFTTrainer.Config(**config), context).train(items, dataset)
    wall = time.perf_counter() - start
    tokens = max(values["num_tokens"] for _, values in metrics if "num_tokens" in values)
    return {"tokens": tokens, "loop_s": model.meta["metrics"]["train_runtime"], "wall_s": wall}


def parameters(model: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        built = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in built.parameters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", help="folder, or a Qwen3-VL size (2B, 4B, 8B, 32B) on GPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 150 CPU, 40 GPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 CPU, 8 GPU")
    parser.add_argument("--image-size", type=int, default=None, help="default: 64 CPU, 512 GPU")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the best is kept")
    parser.add_argument("--work-dir", default=None, help="where pairs, runs and models go")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.steps = args.steps or (40 if gpu else 150)
    args.batch_size = args.batch_size or (8 if gpu else 4)
    args.image_size = args.image_size or (512 if gpu else 64)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ecap-train-bench-"))

    import torch

    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if not gpu:
        torch.set_num_threads(1)  # tiny models: one thread is as fast, and steadier when shared
    if gpu and args.model in ("2B", "4B", "8B", "32B"):
        sys.path.insert(0, str(Path(__file__).parent))
        from caption_throughput import random_qwen3_vl

        model = str(random_qwen3_vl(args.model, work))
    else:
        model = args.model or str(build_tiny_vlm("qwen3-vl", work / "tiny"))
    items = colour_pairs(work / "pairs", max(32, args.batch_size * 4), size=args.image_size)

    runs: list[tuple[str, Any]] = [
        ("plain TRL SFTTrainer", lambda: run_plain(items, settings(args, model), work, gpu)),
        ("ecap sft", lambda: run_ecap(items, settings(args, model), work)),
    ]
    skipped = []
    if gpu:
        if importlib.util.find_spec("liger_kernel"):
            liger = settings(args, model, use_liger_kernel=True)
            runs.append(("ecap sft + Liger", lambda: run_ecap(items, liger, work)))
        else:
            skipped.append("Liger kernels (pip install liger-kernel)")
        if importlib.util.find_spec("deepspeed"):
            zero2 = settings(args, model, deepspeed="zero2", launcher={"type": "torchrun"})
            runs.append(("ecap sft + DeepSpeed ZeRO-2", lambda: run_ecap(items, zero2, work)))
        else:
            skipped.append("DeepSpeed (pip install deepspeed)")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats if not gpu else 1):
        for name, run in runs:
            result = run()
            if name not in best or result["loop_s"] < best[name]["loop_s"]:
                best[name] = result
    count = parameters(model) if gpu else None
    plain = best["plain TRL SFTTrainer"]
    rows = []
    for name, result in best.items():
        row = {
            "run": name,
            "tokens": result["tokens"],
            "loop_tokens_per_s": result["tokens"] / result["loop_s"],
            "wall_tokens_per_s": result["tokens"] / result["wall_s"],
            "loop_ratio": plain["loop_s"] / result["loop_s"] * result["tokens"] / plain["tokens"],
            "wall_ratio": plain["wall_s"] / result["wall_s"] * result["tokens"] / plain["tokens"],
        }
        if count:
            row["mfu"] = 6 * count * row["loop_tokens_per_s"] / PEAK_FLOPS
        rows.append(row)
    if args.json:
        print(json.dumps({"device": args.device, "model": model, "results": rows}, indent=1))
        return
    print(
        f"model {model} on {args.device}; {args.steps} steps x {args.batch_size} rows of "
        f"2 x {args.image_size} px; best of {args.repeats if not gpu else 1}"
    )
    print(f"{'run':<30}{'tokens':>9}{'loop tok/s':>12}{'ratio':>7}{'e2e tok/s':>11}{'ratio':>7}")
    for row in rows:
        mfu = f"  MFU {row['mfu']:.1%}" if "mfu" in row else ""
        print(
            f"{row['run']:<30}{row['tokens']:>9.0f}{row['loop_tokens_per_s']:>12.0f}"
            f"{row['loop_ratio']:>7.3f}{row['wall_tokens_per_s']:>11.0f}{row['wall_ratio']:>7.3f}"
            f"{mfu}"
        )
    print(f"goal: ecap/plain ratio >= {GOAL_RATIO}" + (f"; MFU >= {GOAL_MFU:.0%}" if gpu else ""))
    for what in skipped:
        print(f"skipped: {what} is not installed", file=sys.stderr)


if __name__ == "__main__":
    main()
