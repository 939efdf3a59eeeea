"""The ``transformers`` backend: any ``AutoModelForImageTextToText`` VLM in this process.

Qwen3-VL, Qwen2.5-VL, GLM-4.1V/4.5V and other image-text-to-text models load through the same
``from_pretrained`` path. Requests are generated in batches, left-padded; all ``n`` candidates of
a request come from one ``generate`` call (one row each).

Sampling does not use transformers' global random state, which would make a candidate depend on
which other pairs shared its batch (and on the batch halving after an out-of-memory error): each
row draws its tokens from its own generator, seeded from (``seed + i``, the request), so candidate
``i`` of a pair is the same whatever the batch size, as with the remote backends' ``seed + i``.

An answer that reached ``max_new_tokens`` without an end-of-turn token is reported as cut off
(``finish_reason`` ``length``). When the chat template opens the thinking block itself (Qwen3's
Thinking models end the prompt with ``<think>``), the answer gets that ``<think>`` back in front,
so that cleaning sees reasoning that never closed as reasoning, never as an instruction.

Processors of video-capable families (Qwen-VL, GLM-V) need torchvision for their video part,
which a CPU machine often lacks. When the stock processor cannot be loaded for that reason, the
backend builds the same processor class without its video processor: images are handled
identically, only video support is missing.

Answers are decoded up to the first end-of-turn token with the special tokens kept, so that
thinking blocks and GLM's box markers reach the caller's cleaning intact instead of being
silently merged into the answer.

A LoRA adapter (``options.lora``: a PEFT folder relative to the spec, or a hub id) is loaded onto
the base model with peft and merged into its weights, so generation runs at the base model's
speed. The adapter enters the model's identity (a folder by the sha256 of its files, a hub id as
written), so answers name it and a retrained adapter at the same path is a different model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ecap.errors import EcapError
from ecap.interfaces import require, transport_field
from ecap.models import describe_model, local_folder
from ecap.records import SampleError
from ecap.vlm import (
    TRUNCATED,
    BackendOptions,
    Generation,
    LocalBackend,
    ModelIdentity,
    Outcome,
    Sampling,
    VLMRequest,
)

THINK_OPEN = "<think>"

EXTRA = "vlm"
PLUGIN = "vlm (transformers backend)"


class TransformersOptions(BackendOptions):
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights' dtype; auto keeps the checkpoint's"
    )
    min_pixels: int | None = Field(
        None, ge=1, description="the processor's smallest image budget, in pixels"
    )
    max_pixels: int | None = Field(
        None, ge=1, description="the processor's largest image budget, in pixels"
    )
    processor: str | None = Field(
        None,
        description="load the processor from this folder (relative to the spec) or hub id "
        "instead; a folder's files enter the model's identity",
    )
    device_map: str | dict[str, Any] | None = transport_field(
        "auto", description="where to put the weights: auto, cpu, cuda, cuda:1 or a map"
    )
    attn_implementation: str | None = transport_field(
        None, description="e.g. sdpa or flash_attention_2 (default: transformers' choice)"
    )
    trust_remote_code: bool = Field(
        False, description="run code shipped with a model (semantic: it decides what runs)"
    )
    lora: str | None = Field(
        None,
        description="a LoRA adapter (PEFT format) merged into the model: a folder relative to "
        "the spec, or a hub id",
    )


class TransformersBackend(LocalBackend):
    name = "transformers"
    Options = TransformersOptions
    options: TransformersOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._processor: Any = None
        self._commit: str | None = None
        self._load_error: EcapError | None = None

    # -- loading ------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where ``from_pretrained`` reads from: a local folder, or the hub id."""
        folder = local_folder(self.model, self.context.base_dir)
        return str(folder) if folder else self.model

    @property
    def processor_source(self) -> str | None:
        """``options.processor`` as a local folder (relative to the spec) or a hub id."""
        if self.options.processor is None:
            return None
        folder = local_folder(self.options.processor, self.context.base_dir)
        return str(folder) if folder else self.options.processor

    @property
    def lora_source(self) -> str | None:
        """``options.lora`` as a local folder (relative to the spec) or a hub id."""
        if self.options.lora is None:
            return None
        folder = local_folder(self.options.lora, self.context.base_dir)
        return str(folder) if folder else self.options.lora

    def cache_identity(self) -> ModelIdentity:
        """The weights' identity, combined with the adapter's and the processor's when they
        come from elsewhere."""
        identity = super().cache_identity()
        for role, ref in (("lora", self.options.lora), ("processor", self.options.processor)):
            if ref is not None:
                identity = _combined(
                    identity, role, describe_model(ref, None, self.context.base_dir)
                )
        return identity

    def load(self) -> tuple[Any, Any]:
        """The model and processor, loaded on first use. A load that failed is not tried again
        per batch: its error is raised at once."""
        if self._load_error is not None:
            raise self._load_error
        try:
            return self._load()
        except EcapError as exc:
            self._load_error = exc
            raise

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            torch = require("torch", EXTRA, PLUGIN)
            transformers = require("transformers", EXTRA, PLUGIN)
            options = self.options
            kwargs: dict[str, Any] = {
                "revision": self.revision,
                "trust_remote_code": options.trust_remote_code,
                "dtype": options.dtype
                if options.dtype == "auto"
                else getattr(torch, options.dtype),
            }
            if options.device_map is not None:
                kwargs["device_map"] = options.device_map
            if options.attn_implementation:
                kwargs["attn_implementation"] = options.attn_implementation
            transformers.utils.logging.disable_progress_bar()  # ecap shows its own progress
            try:
                model = transformers.AutoModelForImageTextToText.from_pretrained(
                    self.source, **{k: v for k, v in kwargs.items() if v is not None}
                )
                processor = self._load_processor(transformers)
            except EcapError:
                raise
            except Exception as exc:  # whatever the reason, no request can run: a setup error
                if self.is_out_of_memory(exc):
                    raise
                raise EcapError(
                    f"cannot load model {self.model!r}: {type(exc).__name__}: {exc}"
                ) from exc
            if self.options.lora is not None:
                model = self._with_adapter(model)
            model.eval()
            self._processor = processor
            self._model = model
            self._commit = getattr(model.config, "_commit_hash", None)
        return self._model, self._processor

    def _with_adapter(self, model: Any) -> Any:
        """``model`` with the LoRA adapter merged into its weights."""
        peft = require("peft", EXTRA, PLUGIN)
        try:
            adapted = peft.PeftModel.from_pretrained(model, self.lora_source)
        except Exception as exc:
            if self.is_out_of_memory(exc):
                raise
            raise EcapError(
                f"cannot load LoRA adapter {self.options.lora!r} onto {self.model!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return adapted.merge_and_unload()

    def _load_processor(self, transformers: Any) -> Any:
        source = self.processor_source or self.source
        revision = None if self.options.processor else self.revision
        kwargs: dict[str, Any] = {"trust_remote_code": self.options.trust_remote_code}
        if revision:
            kwargs["revision"] = revision
        try:
            processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)
        except (ImportError, OSError, AttributeError, ValueError) as exc:
            if "video" not in str(exc).lower() and "torchvision" not in str(exc).lower():
                raise
            processor = _image_only_processor(transformers, source, kwargs)
        if not hasattr(processor, "image_processor"):
            # A folder naming a processor class transformers cannot build returns a tokenizer.
            processor = _image_only_processor(transformers, source, kwargs)
        processor.tokenizer.padding_side = "left"
        size = dict(getattr(processor.image_processor, "size", None) or {})
        if self.options.min_pixels:
            size["shortest_edge"] = self.options.min_pixels
        if self.options.max_pixels:
            size["longest_edge"] = self.options.max_pixels
        if size:
            processor.image_processor.size = size
        return processor

    def identity(self) -> ModelIdentity:
        """As configured, plus the hub commit once the weights are loaded."""
        configured = self.cache_identity()
        if self._commit and not configured.content_hash:
            return ModelIdentity(name=configured.name, revision=self._commit)
        return configured

    def close(self) -> None:
        self._model = self._processor = None
        torch = _torch_if_loaded()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        if not super().is_out_of_memory(exc):
            return False
        torch = _torch_if_loaded()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    # -- generation ---------------------------------------------------------------------------

    def generate_batch(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            signature = json.dumps(
                [request.sampling.model_dump(), request.n, dict(request.template_kwargs)],
                sort_keys=True,
            )
            groups.setdefault(signature, []).append(index)
        for indices in groups.values():
            group = [requests[i] for i in indices]
            prepared: list[tuple[int, list[dict[str, Any]]]] = []
            for index, request in zip(indices, group, strict=True):
                try:
                    prepared.append((index, conversation(request)))
                except Exception as exc:  # an image that cannot be decoded fails alone
                    outcomes[index] = SampleError.from_exception(exc)
            if prepared:
                texts = self._generate([c for _, c in prepared], [requests[i] for i, _ in prepared])
                for (index, _), generation in zip(prepared, texts, strict=True):
                    outcomes[index] = generation
        return [outcomes[i] for i in range(len(requests))]

    def _generate(
        self, conversations: list[list[dict[str, Any]]], group: list[VLMRequest]
    ) -> list[Outcome]:
        torch = require("torch", EXTRA, PLUGIN)
        transformers = require("transformers", EXTRA, PLUGIN)
        model, processor = self.load()
        like = group[0]
        n = like.n
        rows = [conversation for conversation in conversations for _ in range(n)]
        inputs = processor.apply_chat_template(
            rows,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
            **dict(like.template_kwargs),
        )
        inputs = inputs.to(model.device)
        sampling = like.sampling
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": False}
        if not sampling.greedy:
            seeds = [row_seed(r, c) for r in group for c in range(n)]
            sampler = _row_sampler(transformers, torch, seeds, sampling)
            kwargs["logits_processor"] = transformers.LogitsProcessorList([sampler])
        if sampling.repetition_penalty:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        prompt_length = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        tokenizer = processor.tokenizer
        stops = _stop_ids(model, processor)
        generations: list[Outcome] = []
        for request in range(len(conversations)):
            texts, finishes, counts = [], [], []
            for candidate in range(n):
                row = request * n + candidate
                produced = output[row, prompt_length:].tolist()
                ids = _until_stop(produced, stops)
                cut = len(ids) == len(produced) and len(ids) >= sampling.max_new_tokens
                text = tokenizer.decode(ids, skip_special_tokens=False)
                prompt_end = tokenizer.decode(inputs["input_ids"][row, -4:].tolist())
                if prompt_end.rstrip().endswith(THINK_OPEN):
                    text = THINK_OPEN + text
                texts.append(text)
                finishes.append(TRUNCATED if cut else "stop")
                counts.append((int(prompt_tokens[row]), len(ids)))
            generations.append(
                Generation(
                    texts=tuple(texts),
                    tokens_in=sum(c[0] for c in counts),
                    tokens_out=sum(c[1] for c in counts),
                    finish_reasons=tuple(finishes),
                    candidate_tokens=tuple(counts),
                )
            )
        return generations


def _combined(base: ModelIdentity, role: str, part: ModelIdentity) -> ModelIdentity:
    """``base`` with ``part`` (an adapter, a processor) folded into its name and hash."""
    combined = hashlib.sha256(f"{base.content_hash or ''}\0{part.label()}".encode()).hexdigest()
    return ModelIdentity(
        name=f"{base.name}+{role}:{part.name}",
        revision=base.revision,
        content_hash=f"sha256:{combined}",
    )


def row_seed(request: VLMRequest, candidate: int) -> int:
    """The seed of candidate ``candidate`` of ``request``: from ``seed + candidate`` (as the
    remote backends send) and the request itself, never from its place in a batch."""
    base = request.sampling.seed or 0
    material = json.dumps([base + candidate, request.identity()], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big") >> 1


def _row_sampler(transformers: Any, torch: Any, seeds: list[int], sampling: Sampling) -> Any:
    """A logits processor that samples each row with its own generator and leaves only the
    chosen token possible, so that greedy decoding then picks it: temperature, top-k and top-p
    as transformers applies them, but without the global random state."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    class RowSampler(transformers.LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            logits = scores.float() / sampling.temperature
            if sampling.top_k:
                k = min(sampling.top_k, logits.shape[-1])
                kth = torch.topk(logits, k, dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if sampling.top_p < 1.0:
                ordered, order = torch.sort(logits, descending=True, dim=-1)
                cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
                drop = cumulative - ordered.softmax(dim=-1) >= sampling.top_p  # keep the first
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            probs = logits.softmax(dim=-1).cpu()
            chosen = torch.cat(
                [torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)]
            )
            forced = torch.full_like(scores, float("-inf"))
            forced[torch.arange(len(generators)), chosen.to(scores.device)] = 0.0
            return forced

    return RowSampler()


def conversation(request: VLMRequest) -> list[dict[str, Any]]:
    """The shared message layout, with each image part turned into a decoded image, in order:
    what ``apply_chat_template`` takes (the throughput benchmark's baseline uses it too)."""
    images = iter((request.source.decoded(), request.target.decoded()))
    messages = []
    for message in request.messages():
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image", "image": next(images)}
                if part["type"] == "image_url"
                else {"type": "text", "text": part["text"]}
                for part in content
            ]
        else:
            content = [{"type": "text", "text": content}]
        messages.append({"role": message["role"], "content": content})
    return messages


def _stop_ids(model: Any, processor: Any) -> set[int]:
    """End-of-turn and padding ids: where an answer ends."""
    stops: set[int] = set()
    for value in (
        model.generation_config.eos_token_id,
        model.generation_config.pad_token_id,
        processor.tokenizer.eos_token_id,
        processor.tokenizer.pad_token_id,
    ):
        if isinstance(value, int):
            stops.add(value)
        elif isinstance(value, list | tuple):
            stops.update(int(v) for v in value)
    return stops


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in stops:
            return ids[:position]
    return ids


def _image_only_processor(transformers: Any, source: str, kwargs: dict[str, Any]) -> Any:
    """The folder's processor class, built from its tokenizer and image processor alone."""
    name = _processor_class(transformers, source, kwargs)
    stock = getattr(transformers, name, None)
    if stock is None:
        raise EcapError(f"{source}: transformers has no processor class {name!r}")

    class ImageOnly(stock):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **extra: Any):
            extra.pop("video_processor", None)
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, video_processor=None, **extra
            )

    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    image_processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
    return ImageOnly(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def _processor_class(transformers: Any, source: str, kwargs: dict[str, Any]) -> str:
    """The processor class a checkpoint names (``processor_config.json``, else the
    tokenizer's config), else the one registered for its model type."""
    folder = Path(source)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            found = json.loads(path.read_text()).get("processor_class")
            if found:
                return str(found)
    config = transformers.AutoConfig.from_pretrained(source, **kwargs)
    mapping = transformers.models.auto.processing_auto.PROCESSOR_MAPPING_NAMES
    found = mapping.get(config.model_type)
    if not found:
        raise EcapError(f"{source}: cannot tell which processor model type {config.model_type!r}")
    return str(found)


def _torch_if_loaded() -> Any:
    import sys

    return sys.modules.get("torch")


__all__ = ["TransformersBackend", "TransformersOptions", "conversation", "row_seed"]
