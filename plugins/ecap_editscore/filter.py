"""The ``editscore`` filter: the official EditScore reward models judge (source, target,
instruction), and a keep rule decides from the stored components.

**Model.** Every released checkpoint is a LoRA adapter on a Qwen2.5-VL or Qwen3-VL instruct model.
``model`` names the adapter and ``base_model`` its base (hub ids, folders relative to the spec, or
``{step: NAME}`` for an adapter a train step produced, whose base is then known). They run through
:func:`ecap.vlm.make_backend`, on any backend: one whose options take a ``lora`` (transformers,
vLLM) gets the base model and the adapter; any other (an OpenAI-compatible server that serves the
adapter, e.g. ``vllm serve BASE --enable-lora --lora-modules editscore=ADAPTER``) gets ``model``
as the name to ask for, and ``base_model`` is not needed.

**Prompts.** Two per sample, as the checkpoints were trained (:mod:`ecap_editscore.prompts`):
semantic consistency over both images and the instruction, answered with two scores
(``prompt_following``: was the instruction carried out; ``consistency``: how little else changed),
and perceptual quality, answered with naturalness and artifacts. Images are labelled
``<img1>: ``/``<img2>: `` as the Qwen2.5-VL checkpoints saw them (set both labels to null for the
Qwen3-VL ones). The request layout is ecap's shared one, source then target, so the quality
prompt sees both images, as in the upstream package's batched path; only its single-pair path
shows the edited image alone.

**Scores.** Answers on 0..``score_range`` (25 for the released checkpoints) are divided by
``score_range / 10``; each sample gives ``prompt_following``, ``consistency``,
``perceptual_quality`` = min(naturalness, artifacts) and ``overall`` = sqrt(min(prompt_following,
consistency) * perceptual_quality). With ``samples: N`` (avg@N) the N answers are drawn with seeds
``seed .. seed + N - 1`` and each component is their mean. Every sample's values, reasoning and
seed are kept in ``Score.meta``. An answer that cannot be read or holds a value out of range fails
the pair with the field and the value named; it is never replaced by a guess.

**Keep rule.** By default ``min_score: 5`` on ``prompt_following``: the filter judges the
instruction, and ``prompt_following`` is the only component that reads it; consistency and
perceptual quality grade the image pair, which is fixed, and ``overall`` mixes them in.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from statistics import fmean
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from ecap.errors import EcapError
from ecap.images import ImageChanged, ImageReadError, prepare_image
from ecap.interfaces import Filter, KeepDecision, PluginConfig, PluginContext, decision_field
from ecap.keep import KeepRule, components, decide_items
from ecap.models import ModelRef
from ecap.records import Item, SampleError, Score
from ecap.vlm import (
    TRUNCATED,
    Generation,
    Outcome,
    Sampling,
    VLMBackend,
    VLMRequest,
    backend_class,
    backend_names,
    make_backend,
    validate_options,
)

from .answers import UnusableAnswer, parse_answer
from .prompts import Prompts, load_prompts

#: The component the default keep rule reads: the one that depends on the instruction.
MAIN_COMPONENT = "prompt_following"
CONSISTENCY_COMPONENTS = ("prompt_following", "consistency")
QUALITY_COMPONENTS = ("perceptual_quality", "overall")
#: The upstream package's decoding for its self-ensemble.
EDITSCORE_SAMPLING = Sampling(max_new_tokens=512, temperature=0.7, top_p=0.9, top_k=20, seed=42)


class EditScoreConfig(PluginConfig):
    model: ModelRef = Field(
        description="the EditScore LoRA adapter: hub id (EditScore/EditScore-7B), folder, or "
        "{step: NAME}; with a server backend, the model name the server serves it under"
    )
    base_model: ModelRef | None = Field(
        None,
        description="the adapter's base, e.g. Qwen/Qwen2.5-VL-7B-Instruct (not needed with a "
        "server backend, nor for a {step: NAME} adapter whose base is recorded)",
    )
    base_revision: str | None = Field(None, description="hub revision of the base model")
    backend: str = Field(
        "transformers", description="transformers, vllm, openai-compatible, or a plugin's"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the backend's own options (docs/captioners.md)"
    )
    prompt_file: str | None = Field(
        None,
        description="YAML with semantic_consistency and perceptual_quality templates "
        "(default: the prompts of the installed editscore package)",
    )
    score_range: int = Field(25, ge=1, description="the scale the checkpoint answers on")
    samples: int = Field(1, ge=1, le=64, description="avg@N: answers averaged per prompt")
    sampling: Sampling = Field(
        default_factory=lambda: EDITSCORE_SAMPLING.model_copy(),
        description="decoding; sample i is drawn with seed + i",
    )
    perceptual_quality: bool = Field(
        True,
        description="also ask the quality prompt (perceptual_quality, overall); false halves "
        "the cost when only the instruction matters",
    )
    source_label: str | None = Field("<img1>: ", description="text before the source image")
    target_label: str | None = Field("<img2>: ", description="text before the target image")
    max_image_pixels: int = Field(
        1_048_576, ge=1, description="larger images are scaled down to this many pixels first"
    )
    keep: KeepRule = decision_field(
        {"min_score": 5.0},
        validate_default=True,
        description=f"which rows to keep (docs/filters.md); components default to {MAIN_COMPONENT}",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in backend_names():
            raise ValueError(f"unknown backend {value!r}; installed: {', '.join(backend_names())}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EditScoreConfig:
        if "lora" in self.options:
            raise ValueError("the adapter is `model:`, not options.lora")
        try:
            validate_options(self.backend, self.options)
        except EcapError as exc:
            raise ValueError(f"options: {exc}") from exc
        if self.samples > 1 and self.sampling.greedy:
            raise ValueError(
                f"samples={self.samples} needs sampling.temperature > 0: greedy decoding gives "
                "the same answer every time"
            )
        produced = set(self.components())
        unknown = components(self.keep, MAIN_COMPONENT) - produced
        if unknown:
            raise ValueError(
                f"keep reads {', '.join(sorted(unknown))}, which this filter does not produce "
                f"(it produces {', '.join(self.components())})"
            )
        return self

    def components(self) -> tuple[str, ...]:
        return CONSISTENCY_COMPONENTS + (QUALITY_COMPONENTS if self.perceptual_quality else ())

    def seeds(self) -> list[int]:
        base = self.sampling.seed or 0
        return [base + i for i in range(self.samples)]


class EditScoreFilter(Filter):
    """The EditScore reward models, on any VLM backend."""

    Config = EditScoreConfig
    config: EditScoreConfig
    revision = "1"
    default_component: ClassVar[str] = MAIN_COMPONENT

    def __init__(self, config: EditScoreConfig, context: PluginContext) -> None:
        super().__init__(config, context)
        self._backend: VLMBackend | None = None

    # -- model and prompts ------------------------------------------------------------------

    @property
    def backend(self) -> VLMBackend:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def _make_backend(self) -> VLMBackend:
        config = self.config
        options = dict(config.options)
        if "lora" not in backend_class(config.backend).Options.model_fields:
            if not isinstance(config.model, str):
                raise EcapError(
                    f"backend {config.backend!r} serves models by name: `model:` must be the "
                    "name the server serves the adapter under"
                )
            model, revision = config.model, None
        else:
            adapter = self.context.model(config.model)
            base_ref = config.base_model or adapter.base
            if base_ref is None:
                raise EcapError(
                    "base_model is required: the Qwen-VL model the adapter was trained on "
                    "(e.g. Qwen/Qwen2.5-VL-7B-Instruct for EditScore/EditScore-7B)"
                )
            options["lora"] = adapter.path
            model, revision = self.context.model(base_ref).path, config.base_revision
        return make_backend(
            config.backend, model=model, revision=revision, options=options, context=self.context
        )

    @cached_property
    def prompts(self) -> Prompts:
        path = None
        if self.config.prompt_file is not None:
            path = Path(self.config.prompt_file).expanduser()
            if not path.is_absolute():
                path = self.context.base_dir / path
        return load_prompts(path, self.config.score_range)

    def fingerprint(self) -> str | None:
        """The weights (base and adapter, by content where local) and the prompt texts."""
        identity = self.backend.cache_identity()
        material = f"{identity.label()}\0{self.prompts.digest()}"
        return hashlib.sha256(material.encode()).hexdigest()

    # -- scoring ----------------------------------------------------------------------------

    def requests_for(self, item: Item) -> list[VLMRequest] | SampleError:
        """The consistency request (and the quality one), each asking for ``samples`` answers."""
        if item.instruction is None:
            return SampleError(
                error_type="NoInstruction", message="EditScore judges an instruction; none here"
            )
        config = self.config
        try:
            source, target = (
                prepare_image(ref, max_pixels=config.max_image_pixels)
                for ref in (item.pair.source, item.pair.target)
            )
        except ImageReadError as exc:
            kind = "ImageChanged" if isinstance(exc, ImageChanged) else "ImageError"
            return SampleError(error_type=kind, message=str(exc))
        prompts = [self.prompts.consistency_for(item.instruction.text)]
        if config.perceptual_quality:
            prompts.append(self.prompts.perceptual_quality)
        return [
            VLMRequest(
                prompt=prompt,
                source=source,
                target=target,
                sampling=config.sampling,
                n=config.samples,
                source_label=config.source_label,
                target_label=config.target_label,
            )
            for prompt in prompts
        ]

    async def ascore(self, batch: Sequence[Item]) -> list[Score | SampleError]:
        prepared = await asyncio.to_thread(lambda: [self.requests_for(item) for item in batch])
        flat = [
            r for requests in prepared if not isinstance(requests, SampleError) for r in requests
        ]
        outcomes = iter(await self.backend.generate(flat) if flat else [])
        results: list[Score | SampleError] = []
        for item, requests in zip(batch, prepared, strict=True):
            if isinstance(requests, SampleError):
                results.append(requests)
            else:
                results.append(self.score_of(item, [next(outcomes) for _ in requests]))
        return results

    def score_of(self, item: Item, outcomes: list[Outcome]) -> Score | SampleError:
        """One score from the consistency outcome (and the quality one)."""
        config = self.config
        fields = ["semantic_consistency", "perceptual_quality"][: len(outcomes)]
        answers = []
        for field, outcome in zip(fields, outcomes, strict=True):
            if isinstance(outcome, SampleError):
                return outcome
            read = self._answers(field, outcome)
            if isinstance(read, SampleError):
                return read
            answers.append(read)
        scale = config.score_range / 10
        samples = []
        for index, seed in enumerate(config.seeds()):
            consistency = answers[0][index]
            sample: dict[str, Any] = {
                "seed": seed,
                "prompt_following": consistency.scores[0] / scale,
                "consistency": consistency.scores[1] / scale,
                "consistency_reasoning": consistency.reasoning,
            }
            if config.perceptual_quality:
                quality = answers[1][index]
                sample["perceptual_quality"] = min(quality.scores) / scale
                sample["overall"] = math.sqrt(
                    min(sample["prompt_following"], sample["consistency"])
                    * sample["perceptual_quality"]
                )
                sample["quality_reasoning"] = quality.reasoning
            samples.append(sample)
        values = {name: fmean(s[name] for s in samples) for name in config.components()}
        identity = self.backend.identity()
        return Score(
            pair_id=item.pair.id,
            instruction_id=item.instruction.id if item.instruction else None,
            scorer="editscore",
            values=values,
            meta={
                "reasoning": samples[0]["consistency_reasoning"],
                "samples": samples,
                "seeds": config.seeds(),
                "score_range": config.score_range,
                "model": identity.as_dict(),
                "backend": config.backend,
                "prompts": self.prompts.origin,
            },
        )

    def _answers(self, field: str, generation: Generation) -> list[Any] | SampleError:
        config = self.config
        if len(generation.texts) != config.samples:
            return SampleError(
                error_type="BackendError",
                message=f"{field}: asked for {config.samples} answers, got {len(generation.texts)}",
            )
        answers = []
        for index, (seed, text) in enumerate(zip(config.seeds(), generation.texts, strict=True)):
            where = f"sample {index} (seed {seed}): "
            if generation.finish_reason(index) == TRUNCATED:
                reason = (
                    f"{field}: cut off at max_new_tokens={config.sampling.max_new_tokens} "
                    f"({text[:80]!r}...)"
                )
                self.backend.discard(generation, index, reason)
                return SampleError(error_type="Truncated", message=where + reason)
            try:
                answers.append(parse_answer(text, config.score_range, field))
            except UnusableAnswer as exc:
                self.backend.discard(generation, index, str(exc))
                return SampleError(error_type=exc.kind, message=where + str(exc))
        return answers

    # -- deciding ---------------------------------------------------------------------------

    def decide(self, items: Sequence[Item]) -> list[KeepDecision]:
        return decide_items(self.config.keep, items, MAIN_COMPONENT)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


__all__ = ["EditScoreConfig", "EditScoreFilter"]
