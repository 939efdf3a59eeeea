"""Tiny, randomly initialised VLMs of the real architectures, built offline for tests.

Each builder trains a byte-level BPE tokenizer on a few caption-like sentences, makes the real
processor around it (the model family's image processor, a chat template in the family's format)
and a model of the real class with a few thousand parameters, and saves them with
``save_pretrained``, so tests load them through the same ``from_pretrained`` path as real weights::

    path = build_tiny_vlm("qwen3-vl", cache_dir)   # a folder holding config, weights, tokenizer
    model = AutoModelForImageTextToText.from_pretrained(path)

Architectures: ``qwen3-vl`` (``Qwen3VLForConditionalGeneration``), ``qwen2.5-vl``
(``Qwen2_5_VLForConditionalGeneration``) and ``glm4.5v`` (``Glm4vMoeForConditionalGeneration``,
GLM-4.5V's mixture-of-experts class). Builds are cached on disk under a name that includes the
builder's and transformers' versions, and written atomically, so concurrent test sessions share
them. A build takes about a second; the folders are about 1 MB.

The models' output rows for special tokens are zeroed, so random weights write text rather than
ending the answer at once: a tiny model always answers with ``max_new_tokens`` tokens of
gibberish, which is what captioning and throughput tests need.

No video processor is saved (it needs torchvision); loaders must cope with image-only folders,
as :mod:`ecap_vlm.backends.transformers` does. torch, transformers and tokenizers are imported
only when a builder runs (``pip install 'editcaption[vlm]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHITECTURES = ("qwen3-vl", "qwen2.5-vl", "glm4.5v")
#: Bump when a build changes, so that cached folders are rebuilt.
BUILDER_VERSION = "1"

CORPUS = (
    "Change the red ball in the center to a blue ball.",
    "Add a small green tree on the left side of the image.",
    "Remove the yellow sun from the top right corner.",
    "Move the ball from the left to the right of the frame.",
    "Make the whole scene look like night, with a dark blue sky.",
    "Add a brown wooden box at the bottom, in front of the wall.",
    "Replace the two white cups on the table with three black mugs.",
    "Turn the car from red to silver and keep the background unchanged.",
    "The source image shows a garden; the target image shows the same garden in snow.",
)

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
GLM_SPECIALS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<think>",
    "</think>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<|image|>",
    "<|video|>",
)

# Chat templates in each family's format, written for these fixtures. Images may be given as
# {"type": "image"} parts (transformers) or {"type": "image_url"} parts (OpenAI style).
_QWEN_TEMPLATE = (
    "{%- set default_system = DEFAULT_SYSTEM -%}"
    "{%- if default_system and messages[0].role != 'system' -%}"
    "<|im_start|>system\n{{ default_system }}<|im_end|>\n"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "<|im_start|>{{ message.role }}\n"
    "{%- if message.content is string -%}{{ message.content }}"
    "{%- else -%}{%- for part in message.content -%}"
    "{%- if part.type in ('image', 'image_url') -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part.type == 'text' -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)
_GLM_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for message in messages -%}"
    "<|{{ message.role }}|>\n"
    "{%- if message.content is string -%}{{ message.content }}"
    "{%- else -%}{%- for part in message.content -%}"
    "{%- if part.type in ('image', 'image_url') -%}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif part.type == 'text' -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>\n"
    "{%- if enable_thinking is defined and not enable_thinking -%}<think></think>\n{%- endif -%}"
    "{%- endif -%}"
)


def tiny_vlm_cache_dir() -> Path:
    """``$ECAP_TINY_VLM_CACHE``, else ``~/.cache/ecap/tiny-vlm``."""
    configured = os.environ.get("ECAP_TINY_VLM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "ecap" / "tiny-vlm"


def build_tiny_vlm(architecture: str, cache_dir: Path | None = None) -> Path:
    """The folder of a tiny ``architecture`` model, built once and reused."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    import transformers

    root = cache_dir or tiny_vlm_cache_dir()
    tag = hashlib.sha256(
        f"{BUILDER_VERSION}:{transformers.__version__}:{architecture}".encode()
    ).hexdigest()[:12]
    target = root / f"{architecture}-{tag}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{architecture}-", dir=root))
    try:
        BUILDERS[architecture](scratch)
        try:
            os.replace(scratch, target)
        except OSError:  # another session finished the same build first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _bpe(
    specials: tuple[str, ...], corpus: Sequence[str] = CORPUS
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary trained on ``corpus``, specials appended after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus) * 20, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for token in specials:
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]


def _image_only(processor_cls: type) -> type:
    """``processor_cls`` without its video processor (which needs torchvision)."""

    class ImageOnly(processor_cls):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)

    ImageOnly.__name__ = processor_cls.__name__
    return ImageOnly


def _save(
    model: Any,
    processor: Any,
    folder: Path,
    processor_class: str,
    specials: Any,
    half_storage: bool = False,
) -> None:
    """Save model and processor; name the stock processor class in the processor config."""
    import torch

    with torch.no_grad():  # random weights write text instead of ending at once
        head = model.get_output_embeddings().weight
        head[[processor.tokenizer.convert_tokens_to_ids(t) for t in specials]] = 0
    if half_storage:
        model.to(torch.float16)
    model.save_pretrained(folder)
    if half_storage:  # computed in float32 wherever it is loaded
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        for section in (config, config.get("text_config", {}), config.get("vision_config", {})):
            if "dtype" in section:
                section["dtype"] = "float32"
        config_path.write_text(json.dumps(config, indent=2))
    processor.save_pretrained(folder)
    config_path = folder / "processor_config.json"
    data = json.loads(config_path.read_text())
    data["processor_class"] = processor_class
    config_path.write_text(json.dumps(data, indent=2))
    tokenizer_config = folder / "tokenizer_config.json"
    data = json.loads(tokenizer_config.read_text())
    data["processor_class"] = processor_class
    tokenizer_config.write_text(json.dumps(data, indent=2))


def _transformers() -> Any:
    """transformers, untyped: the builders pass values its stubs describe too narrowly."""
    import transformers

    return transformers


def _ids(tokenizer: Any, tokens: tuple[str, ...]) -> dict[str, int]:
    return {t: int(tokenizer.convert_tokens_to_ids(t)) for t in tokens}


def _qwen_tokenizer(default_system: str | None, corpus: Sequence[str] = CORPUS) -> Any:
    vocab, merges = _bpe(QWEN_SPECIALS, corpus)
    tokenizer = _transformers().Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.add_tokens(list(QWEN_SPECIALS), special_tokens=True)
    template = _QWEN_TEMPLATE.replace("DEFAULT_SYSTEM", json.dumps(default_system or ""))
    return tokenizer, template


def _qwen_image_processor(patch_size: int) -> Any:
    unit = patch_size * 2  # one merged visual token covers unit x unit pixels
    pil = _transformers().models.qwen2_vl.image_processing_pil_qwen2_vl
    return pil.Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 4 * unit * unit, "longest_edge": 16 * unit * unit},
    )


def _text_config(tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "dtype": "float32",
    }
    config.update(overrides)
    return config


@dataclass(frozen=True)
class Size:
    """How big a model the builders make. ``TINY`` (the default, the test fixtures) is the
    smallest that runs every code path; ``SMALL`` can learn a simple visual task on a CPU in
    minutes (the quickstart's ShapesEdit recipe), and is stored in under 2 MB."""

    hidden: int
    layers: int
    heads: int
    vision_hidden: int
    vision_depth: int
    #: Store the weights in float16 (the config still says float32, so they load as float32):
    #: half the bytes for a model folder committed to a repository.
    half_storage: bool = False


TINY = Size(hidden=64, layers=2, heads=4, vision_hidden=32, vision_depth=2)
SMALL = Size(hidden=128, layers=2, heads=8, vision_hidden=64, vision_depth=4, half_storage=True)
SIZES = {"tiny": TINY, "small": SMALL}


def _build_qwen3_vl(folder: Path, size: Size = TINY, corpus: Sequence[str] = CORPUS) -> None:
    import torch

    tf = _transformers()
    tokenizer, template = _qwen_tokenizer(None, corpus)
    ids = _ids(tokenizer, QWEN_SPECIALS)
    processor = _image_only(tf.Qwen3VLProcessor)(
        image_processor=_qwen_image_processor(16), tokenizer=tokenizer, chat_template=template
    )
    text = _text_config(
        tokenizer,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        hidden_size=size.hidden,
        intermediate_size=2 * size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
    )
    config = tf.Qwen3VLConfig(
        text_config=text,
        vision_config={
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden,
            "intermediate_size": 2 * size.vision_hidden,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": size.hidden,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = tf.Qwen3VLForConditionalGeneration(config)
    _generation_ids(model, ids["<|im_end|>"], ids["<|endoftext|>"])
    _save(model, processor, folder, "Qwen3VLProcessor", QWEN_SPECIALS, size.half_storage)


def _build_qwen25_vl(folder: Path) -> None:
    import torch

    tf = _transformers()
    tokenizer, template = _qwen_tokenizer("You are a helpful assistant.")
    ids = _ids(tokenizer, QWEN_SPECIALS)
    processor = _image_only(tf.Qwen2_5_VLProcessor)(
        image_processor=_qwen_image_processor(14), tokenizer=tokenizer, chat_template=template
    )
    text = _text_config(
        tokenizer,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = tf.Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = tf.Qwen2_5_VLForConditionalGeneration(config)
    _generation_ids(model, ids["<|im_end|>"], ids["<|endoftext|>"])
    _save(model, processor, folder, "Qwen2_5_VLProcessor", QWEN_SPECIALS)


def _build_glm45v(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tf = _transformers()
    vocab, merges = _bpe(GLM_SPECIALS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
        padding_side="left",
    )
    tokenizer.add_tokens(list(GLM_SPECIALS), special_tokens=True)
    ids = _ids(tokenizer, GLM_SPECIALS)
    image_processor = tf.models.glm4v.image_processing_pil_glm4v.Glm4vImageProcessorPil(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28},
    )
    processor = _image_only(tf.Glm4vProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_GLM_TEMPLATE
    )
    stops = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    text = _text_config(
        tokenizer,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [2, 1, 1],
            "partial_rotary_factor": 0.5,
        },
        moe_intermediate_size=32,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        first_k_dense_replace=1,
        eos_token_id=stops,
        pad_token_id=ids["<|endoftext|>"],
    )
    config = tf.Glm4vMoeConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "image_size": 56,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
        },
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = tf.Glm4vMoeForConditionalGeneration(config)
    _generation_ids(model, stops, ids["<|endoftext|>"])
    _save(model, processor, folder, "Glm4vProcessor", GLM_SPECIALS)


def _generation_ids(model: Any, eos: int | list[int], pad: int) -> None:
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False


BUILDERS: dict[str, Callable[[Path], None]] = {
    "qwen3-vl": _build_qwen3_vl,
    "qwen2.5-vl": _build_qwen25_vl,
    "glm4.5v": _build_glm45v,
}


def vllm_ready_qwen3_vl(tiny: Path, folder: Path) -> Path:
    """A copy of the tiny Qwen3-VL at ``tiny`` that vLLM's CPU build loads, saved to ``folder``.

    vLLM's CPU attention needs heads of 32 or more dimensions (the tiny model's are 16), and vLLM
    builds the full processor, so the folder names a video processor, as published checkpoints
    do (transformers still loads it image-only). Weights are random again (seed 0), with the
    output rows of special tokens zeroed as in the tiny model, so answers never end early.
    """
    import torch

    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(tiny)
    config.text_config.head_dim = 32
    config.text_config.rope_parameters = {
        **config.text_config.rope_parameters,
        "mrope_section": [8, 4, 4],  # must add up to head_dim / 2
    }
    torch.manual_seed(0)
    model = transformers.AutoModelForImageTextToText.from_config(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    with torch.no_grad():
        special = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.added_tokens_encoder]
        model.get_output_embeddings().weight[special] = 0
    model.generation_config = transformers.GenerationConfig.from_pretrained(tiny)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for path in tiny.iterdir():
        if path.name not in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy(path, folder / path.name)
    processor_config = folder / "processor_config.json"
    data = json.loads(processor_config.read_text())
    video = {k: v for k, v in data["image_processor"].items() if k != "image_processor_type"}
    data["video_processor"] = {**video, "video_processor_type": "Qwen3VLVideoProcessor"}
    processor_config.write_text(json.dumps(data, indent=2))
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m ecap.testing.tiny_vlm ARCHITECTURE FOLDER [--size small] [--corpus FILE]``:
    build one model into FOLDER. ``--corpus`` (one sentence per line) trains the tokenizer on the
    words the model will be taught, and ``--size small`` makes a model that can learn (Qwen3-VL
    only)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("architecture", choices=ARCHITECTURES)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.folder.exists():
        parser.error(f"{args.folder} exists; remove it first")
    custom = args.size != "tiny" or args.corpus is not None
    if custom and args.architecture != "qwen3-vl":
        parser.error("--size and --corpus are offered for qwen3-vl only")
    args.folder.mkdir(parents=True)
    if custom:
        corpus = args.corpus.read_text().splitlines() if args.corpus else CORPUS
        _build_qwen3_vl(args.folder, SIZES[args.size], [line for line in corpus if line.strip()])
    else:
        BUILDERS[args.architecture](args.folder)
    print(args.folder)


__all__ = [
    "ARCHITECTURES",
    "BUILDER_VERSION",
    "build_tiny_vlm",
    "main",
    "tiny_vlm_cache_dir",
    "vllm_ready_qwen3_vl",
]

if __name__ == "__main__":
    main()
