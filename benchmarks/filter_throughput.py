"""EditScore filter throughput: pairs scored per second on each available backend, as a ratio to a
plain transformers loop on the same model in the same run.

Run from the repository root (needs the ``vlm`` extra; ``vllm`` is measured when installed)::

    python benchmarks/filter_throughput.py                          # CPU, tiny Qwen2.5-VL + LoRA
    python benchmarks/filter_throughput.py --pairs 4 --new-tokens 8  # a quick smoke run
    python benchmarks/filter_throughput.py --device cuda --model 7B  # GPU, 7B-class + LoRA
    python benchmarks/filter_throughput.py --device cuda --model /m/Qwen2.5-VL-7B-Instruct \\
        --adapter /m/EditScore-7B

Every backend scores the same ``--pairs`` synthetic pairs (two ``--image-size`` px images each,
the pairs of ``caption_throughput.py``) with the ``editscore`` filter at avg@``--samples``: per
pair the consistency prompt and, unless ``--no-quality``, the quality prompt, each answered
``--samples`` times with EditScore's decoding (temperature 0.7, top-p 0.9, top-k 20) and at most
``--new-tokens`` new tokens. Timed, in one process and one run:

1. the baseline, *transformers one pair at a time*: ``apply_chat_template`` + ``generate`` for
   each of a pair's prompts in turn, on the very (adapter-merged) model the transformers backend
   loaded;
2. *ecap transformers*: the filter (image preparation, batched generation, answer parsing,
   score records) in batches of ``--batch-size``;
3. *ecap vllm*, when vLLM is installed (or ``$ECAP_VLLM_PYTHON`` names an interpreter with it):
   the same filter on the ``vllm`` backend with the adapter as a LoRA, all pairs in one batch;
4. *ecap openai-compatible*, when ``--server URL`` names a server that serves the adapter under
   ``--served-name`` (``vllm serve BASE --enable-lora --lora-modules editscore=ADAPTER``).

A pair counts once it has an outcome: a score, or a recorded failure. Random weights do not
answer in EditScore's JSON, so with them every outcome is a failure, after the same generation
work a real checkpoint does; the figures measure that work. Model loading and one warm-up batch
per backend are not timed. Nothing asserts a threshold; the issue's goal on one H200 is >= 25
scored pairs/s at avg@1 with two 512 px images, for a 7B-class base and a LoRA adapter.

``--model 7B`` saves a random-weight Qwen2.5-VL of the 7B architecture (real widths and depths,
the tiny fixture's tokenizer and processor) to ``--work-dir``; without ``--adapter`` a random
LoRA adapter (rank 16 on the language model's attention) is made for whatever base is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from caption_throughput import image_size, make_pairs, release

from ecap.interfaces import PluginContext
from ecap.records import Instruction, Item, SampleError
from ecap.testing.tiny_vlm import build_tiny_vlm

TARGET = 25.0  # scored pairs/s on one H200 (7B-class + LoRA, avg@1, 2 x 512 px)

#: Qwen2.5-VL-7B-Instruct's published architecture.
QWEN25_VL_7B = {
    "text": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "max_position_embeddings": 128000,
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
)
#: Used when the editscore package (the checkpoints' own prompts) is not installed: the same
#: structure and about the same length, in this script's own words.
BENCH_PROMPTS = {
    "semantic_consistency": (
        "You are an expert judge of image edits. Both pictures are machine-made. Reply with a "
        'JSON object only, {"reasoning": "...", "score": [a, b]}, keeping the reasoning brief.\n'
        "The first picture is the original and the second an edited copy. Decide how well the "
        "edit carries out the instruction; the pictures may look the same when the edit failed.\n"
        "a, from 0 to 25: 0 means the edited picture ignores the instruction entirely, 25 means "
        "it follows it perfectly. b, from 0 to 25: 0 means the edited picture shares nothing with "
        "the original, 25 means nothing changed beyond what the instruction asks.\n"
        "Instruction: <instruction>"
    ),
    "perceptual_quality": (
        "You are an expert judge of image edits. Both pictures are machine-made. Reply with a "
        'JSON object only, {"reasoning": "...", "score": [a, b]}, keeping the reasoning brief.\n'
        "Judge the edited picture alone. a, from 0 to 25: how natural it looks (distance, "
        "shadows, lighting); b, from 0 to 25: how free it is of artifacts (distortions, "
        "watermarks, blurred faces, odd body parts, subjects that do not blend in)."
    ),
}


def random_qwen25_vl_7b(folder: Path) -> Path:
    """A Qwen2.5-VL of the 7B architecture with random weights, saved to ``folder``: the tiny
    fixture's tokenizer and processor, and the real widths and depths."""
    import torch
    import transformers

    target = folder / "qwen2.5-vl-7b-random"
    if (target / "config.json").exists():
        return target
    tiny = build_tiny_vlm("qwen2.5-vl", folder / "tiny")
    base = transformers.AutoConfig.from_pretrained(tiny)
    text = {**base.text_config.to_dict(), **QWEN25_VL_7B["text"], "dtype": "bfloat16"}
    text.pop("layer_types", None)  # one per tiny layer; derived again from the real depth
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": [16, 24, 24],
    }
    config = transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config={**base.vision_config.to_dict(), **QWEN25_VL_7B["vision"]},
        image_token_id=base.image_token_id,
        video_token_id=base.video_token_id,
        vision_start_token_id=base.vision_start_token_id,
        vision_end_token_id=base.vision_end_token_id,
        tie_word_embeddings=False,
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    with torch.no_grad():  # only plain tokens may win, so answers run to --new-tokens
        model.get_output_embeddings().weight[min(stops) :] = 0
    model.generation_config.eos_token_id = stops[0]
    model.generation_config.pad_token_id = stops[1]
    scratch = Path(tempfile.mkdtemp(dir=folder))
    model.save_pretrained(scratch)
    for name in PROCESSOR_FILES:
        (scratch / name).write_bytes((tiny / name).read_bytes())
    processor_config = json.loads((scratch / "processor_config.json").read_text())
    # Qwen2.5-VL's own pixel budgets (the fixture's are tiny): a 512 px image is ~330 tokens.
    processor_config["image_processor"]["size"] = {"shortest_edge": 3136, "longest_edge": 12845056}
    (scratch / "processor_config.json").write_text(json.dumps(processor_config, indent=2))
    os.replace(scratch, target)
    del model
    gc.collect()
    return target


def random_adapter(base: str, folder: Path) -> Path:
    """A rank-16 LoRA adapter on ``base``'s language attention, randomly initialised."""
    import peft
    import torch
    import transformers

    target = folder / "random-lora"
    if (target / "adapter_config.json").exists():
        return target
    model = transformers.AutoModelForImageTextToText.from_pretrained(
        base, dtype=torch.bfloat16, device_map="cuda" if torch.cuda.is_available() else None
    )
    config = peft.LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        init_lora_weights=False,
    )
    peft.get_peft_model(model, config).save_pretrained(target)
    del model
    gc.collect()
    return target


def editscore_filter(
    backend: str, model: str, base: str | None, args: argparse.Namespace, options: dict[str, Any]
) -> Any:
    from ecap_editscore.filter import EditScoreConfig, EditScoreFilter

    config = EditScoreConfig.model_validate(
        {
            "model": model,
            "base_model": base,
            "backend": backend,
            "options": options,
            "prompt_file": args.prompt_file,
            "samples": args.samples,
            "sampling": {
                "max_new_tokens": args.new_tokens,
                "temperature": 0.7,
                "top_p": 0.9,
                "top_k": 20,
                "seed": 42,
            },
            "perceptual_quality": not args.no_quality,
        }
    )
    work = Path(args.work_dir)
    return EditScoreFilter(config, PluginContext(step_id="bench", base_dir=work, work_dir=work))


def with_instructions(items: list[Item]) -> list[Item]:
    return [
        item.model_copy(
            update={
                "instruction": Instruction(
                    pair_id=item.pair.id,
                    text="Move the first circle to the other side and invert its colour.",
                    origin="model",
                )
            }
        )
        for item in items
    ]


def time_filter(plugin: Any, items: list[Item], batch_size: int) -> tuple[float, int]:
    """Seconds for all items after one untimed warm-up batch; how many got a score."""

    async def run(batch: list[Item]) -> list[Any]:
        return list(await plugin.ascore(batch))

    asyncio.run(run(items[: min(batch_size, len(items))]))
    scored = 0
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        for result in asyncio.run(run(items[start : start + batch_size])):
            if result is None:
                raise RuntimeError("a pair got no outcome")
            scored += not isinstance(result, SampleError)
    return time.perf_counter() - started, scored


def time_baseline(plugin: Any, items: list[Item], args: argparse.Namespace) -> float:
    """transformers, one pair (and one prompt) at a time, on the backend's own model."""
    import torch

    from ecap_vlm.backends.transformers import conversation

    model, processor = plugin.backend.load()
    requests = [plugin.requests_for(item) for item in items]

    def one(pair_requests: list[Any]) -> None:
        for request in pair_requests:
            inputs = processor.apply_chat_template(
                conversation(request),
                tokenize=True,
                add_generation_prompt=True,
                return_dict=True,
                return_tensors="pt",
            ).to(model.device)
            with torch.inference_mode():
                model.generate(
                    **inputs,
                    max_new_tokens=args.new_tokens,
                    do_sample=True,
                    temperature=0.7,
                    top_p=0.9,
                    top_k=20,
                    num_return_sequences=args.samples,
                )

    one(requests[0])
    started = time.perf_counter()
    for pair_requests in requests:
        one(pair_requests)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", help="base model folder or hub id, or 7B (random weights)")
    parser.add_argument("--adapter", help="LoRA adapter folder (default: a random one)")
    parser.add_argument("--pairs", type=int, default=None, help="default: 16 on CPU, 512 on GPU")
    parser.add_argument(
        "--image-size", type=image_size, default=512, help="pixels per side, at least 36"
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 32 CPU, 128 GPU")
    parser.add_argument("--samples", type=int, default=1, help="avg@N")
    parser.add_argument("--no-quality", action="store_true", help="consistency prompt only")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 CPU, 64 GPU")
    parser.add_argument(
        "--baseline-pairs", type=int, default=None, help="default: all on CPU, 16 on GPU"
    )
    parser.add_argument("--server", help="an OpenAI-compatible server serving the adapter")
    parser.add_argument("--served-name", default="editscore", help="the adapter's served name")
    parser.add_argument("--vllm-options", default="{}", help="JSON options for the vllm backend")
    parser.add_argument("--prompt-file", help="prompts YAML (default: the editscore package's)")
    parser.add_argument("--work-dir", default=None, help="where pairs and random models go")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.pairs = args.pairs or (512 if gpu else 16)
    args.new_tokens = args.new_tokens or (128 if gpu else 32)
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.baseline_pairs = args.baseline_pairs or (16 if gpu else args.pairs)
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="ecap-filter-bench-")
    work = Path(args.work_dir)
    (work / "pairs").mkdir(parents=True, exist_ok=True)
    if args.prompt_file is None and importlib.util.find_spec("editscore") is None:
        args.prompt_file = str(work / "prompts.json")
        Path(args.prompt_file).write_text(json.dumps(BENCH_PROMPTS))

    import torch

    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if not gpu:
        torch.set_num_threads(1)  # tiny models: one thread is as fast, and steadier when shared
    if args.model == "7B":
        base = str(random_qwen25_vl_7b(work))
    elif args.model:
        base = args.model
    else:
        base = str(build_tiny_vlm("qwen2.5-vl", work / "tiny"))
    adapter = args.adapter or str(random_adapter(base, work))
    items = with_instructions(make_pairs(work / "pairs", args.pairs, args.image_size))
    options = {"device_map": "cuda" if gpu else "cpu", "dtype": "bfloat16" if gpu else "auto"}

    results: list[dict[str, Any]] = []

    def report(name: str, seconds: float, pairs: int, scored: int | None) -> None:
        results.append(
            {
                "backend": name,
                "pairs": pairs,
                "scored": scored,
                "seconds": seconds,
                "pairs_per_s": pairs / seconds,
            }
        )

    plugin = editscore_filter("transformers", adapter, base, args, options)
    baseline_items = items[: args.baseline_pairs]
    seconds = time_baseline(plugin, baseline_items, args)
    report("transformers, one pair at a time (baseline)", seconds, len(baseline_items), None)
    seconds, scored = time_filter(plugin, items, args.batch_size)
    report(f"ecap transformers (batch {args.batch_size})", seconds, len(items), scored)
    release(plugin)

    has_vllm = bool(importlib.util.find_spec("vllm") or os.environ.get("ECAP_VLLM_PYTHON"))
    if has_vllm:
        plugin = editscore_filter("vllm", adapter, base, args, json.loads(args.vllm_options))
        seconds, scored = time_filter(plugin, items, len(items))
        report("ecap vllm (LoRA)", seconds, len(items), scored)
        release(plugin)
    if args.server:
        server = {"base_url": args.server, "max_concurrent_calls": 64}
        plugin = editscore_filter("openai-compatible", args.served_name, None, args, server)
        seconds, scored = time_filter(plugin, items, len(items))
        report("ecap openai-compatible", seconds, len(items), scored)
        release(plugin)

    baseline = results[0]["pairs_per_s"]
    for row in results:
        row["ratio"] = row["pairs_per_s"] / baseline
    if args.json:
        print(json.dumps({"device": args.device, "base": base, "results": results}, indent=1))
        return
    prompts = 1 if args.no_quality else 2
    print(
        f"base {base} + LoRA {adapter} on {args.device}; {args.pairs} pairs of 2 x "
        f"{args.image_size} px; avg@{args.samples}, {prompts} prompt(s) per pair, "
        f"<= {args.new_tokens} new tokens"
    )
    print(f"{'backend':<46}{'pairs':>7}{'scored':>8}{'pairs/s':>10}{'ratio':>8}")
    for row in results:
        scored = "-" if row["scored"] is None else str(row["scored"])
        print(
            f"{row['backend']:<46}{row['pairs']:>7}{scored:>8}{row['pairs_per_s']:>10.2f}"
            f"{row['ratio']:>8.2f}"
        )
    if gpu:
        best = max(r["pairs_per_s"] for r in results[1:])
        print(f"best ecap backend: {best:.1f} pairs/s (goal >= {TARGET:.0f} pairs/s on one H200)")
    if not has_vllm:
        print("vllm is not available: its backend was not measured", file=sys.stderr)


if __name__ == "__main__":
    main()
