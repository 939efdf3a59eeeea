"""The ``vlm`` captioner: any VLM on any backend writes editing instructions for pairs.

For each pair it prepares both images (:func:`ecap.images.prepare_image`; for a local engine
the full decode runs while the engine works, see :meth:`VLMCaptioner.acaption`), renders the prompt
template, asks the backend for ``n`` answers, cleans each (:mod:`ecap_vlm.cleaning`) and returns
them as candidate instructions whose ``author`` names the exact weights (:class:`ModelIdentity`).
A pair whose image cannot be read or changed since import, whose request fails, or any of whose
answers is unusable or cut off by ``max_new_tokens`` fails alone, with the reason. An unusable
answer is struck from the call log, so the next run asks again, unless decoding was greedy: the
same answer would come back, so it is kept and the pair fails again without a new paid call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import (
    Field,
    GetJsonSchemaHandler,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ecap.errors import EcapError, did_you_mean
from ecap.images import (
    DeferredImage,
    ImageChanged,
    ImageReadError,
    PreparedImage,
    across_cores,
    prepare_image,
    prepare_image_deferred,
)
from ecap.interfaces import Captioner, PluginConfig, PluginContext
from ecap.models import ModelRef, StepModel
from ecap.records import Instruction, Item, SampleError
from ecap.vlm import (
    TRUNCATED,
    BackendOptions,
    Generation,
    LocalBackend,
    Outcome,
    Sampling,
    VLMBackend,
    VLMRequest,
    backend_class,
    backend_names,
    make_backend,
    validate_options,
)

from .cleaning import UnusableAnswer, clean_answer
from .prompts import DEFAULT_PROMPT, check_template, render


class AnyBackendOptionsSchema:
    """The ``options`` field's JSON schema: one of the backends' own option models (pydantic
    alone would describe the empty base class, and editors would reject every real option).
    Validation stays with :meth:`VLMCaptionerConfig._backend_options`, which knows ``backend``
    and so reports errors at ``options.<field>``; :meth:`VLMCaptionerConfig.model_json_schema`
    ties each backend name to its options."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [handler(options.__pydantic_core_schema__) for options in _backend_options()]
        }


def _backend_options() -> list[type[BackendOptions]]:
    """Every importable backend's options model (for the schema only; a backend whose module
    cannot be imported here is left out of it)."""
    found = []
    for name in backend_names():
        try:
            found.append(backend_class(name).Options)
        except EcapError:
            continue
    return found


class VLMCaptionerConfig(PluginConfig):
    model: ModelRef = Field(
        description="hub id, local folder (relative to the spec), the API's model name, or "
        "{step: NAME}: the model an upstream train step produced"
    )
    revision: str | None = Field(
        None, description="hub revision; pin a commit so the cache key names exact weights"
    )
    backend: str = Field(
        "transformers",
        description="where the model runs: transformers, vllm, openai-compatible, gemini, or any "
        "backend a plugin registers (`ecap plugins list`)",
    )
    options: Annotated[SerializeAsAny[BackendOptions], AnyBackendOptionsSchema()] = Field(
        default_factory=BackendOptions,
        validate_default=True,
        description="the backend's own settings (see docs/captioners.md for each backend)",
    )
    prompt: str = Field(DEFAULT_PROMPT, description="instruction prompt template")
    system: str | None = Field(None, description="system prompt, if any")
    source_label: str | None = Field("Source image:", description="text before the source")
    target_label: str | None = Field("Target image:", description="text before the target")
    sampling: Sampling = Field(default_factory=Sampling, description="decoding parameters")
    n: int = Field(1, ge=1, le=64, description="candidate instructions per pair")
    template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="chat-template arguments, e.g. {enable_thinking: false}"
    )
    max_image_pixels: int = Field(
        1_048_576, ge=1, description="larger images are scaled down to this many pixels first"
    )
    max_input_pixels: int = Field(
        64_000_000, ge=1, description="larger images fail their pair instead"
    )
    max_answer_chars: int = Field(2000, ge=1, description="longer answers fail their pair")
    strip_thinking: bool = Field(True, description="drop <think>...</think> before the answer")
    strip_box_tokens: bool = Field(True, description="drop <|begin_of_box|> markers")
    keep_truncated: bool = Field(
        False,
        description="store answers cut off by max_new_tokens (default: they fail their pair; "
        "reasoning that never closed fails whatever this says)",
    )

    #: Options each backend gets unless the spec sets them (a captioner's hosted defaults).
    backend_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in backend_names():
            raise ValueError(
                f"unknown backend {value!r}{did_you_mean(value, backend_names())}; "
                f"installed: {', '.join(backend_names())}"
            )
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _backend_options(cls, value: Any, info: ValidationInfo) -> Any:
        backend = info.data.get("backend")
        if backend is None:  # the backend itself was invalid; that error is reported
            return BackendOptions()
        if isinstance(value, BackendOptions):  # only what was set, so defaults still apply
            value = value.model_dump(exclude_unset=True)
        data = {**cls.backend_defaults.get(backend, {}), **dict(value or {})}
        try:
            return validate_options(backend, data)
        except EcapError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _backend_takes_the_request(self) -> VLMCaptionerConfig:
        if self.backend == "gemini":
            from .backends.gemini import gemini_unsupported

            problem = gemini_unsupported(self.sampling.repetition_penalty, self.template_kwargs)
            if problem:
                raise ValueError(problem)
        return self

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Pydantic's schema, plus which options model goes with which ``backend``."""
        schema = super().model_json_schema(*args, **kwargs)
        by_title = {s.get("title"): s for s in schema["properties"]["options"]["anyOf"]}
        default = cls.model_fields["backend"].default
        ties = []
        for name in backend_names():
            try:
                options = backend_class(name).Options
            except EcapError:
                continue
            if options.__name__ not in by_title:
                continue
            chosen: dict[str, Any] = {
                "properties": {"backend": {"const": name}},
                "required": ["backend"],
            }
            if name == default:  # ``backend`` left out means this one
                chosen = {"anyOf": [chosen, {"not": {"required": ["backend"]}}]}
            ties.append(
                {"if": chosen, "then": {"properties": {"options": by_title[options.__name__]}}}
            )
        schema["allOf"] = ties
        return schema

    @model_validator(mode="after")
    def _candidates_differ(self) -> VLMCaptionerConfig:
        if self.n > 1 and self.sampling.greedy:
            raise ValueError(
                f"n={self.n} candidates need sampling.temperature > 0: greedy decoding would "
                "write the same instruction n times"
            )
        return self


class VLMCaptioner(Captioner):
    """Any model on any backend (``backend:``)."""

    Config = VLMCaptionerConfig
    config: VLMCaptionerConfig
    revision = "2"  # 2: control and media tokens cleaned out of answers

    def __init__(self, config: VLMCaptionerConfig, context: PluginContext) -> None:
        super().__init__(config, context)
        self._backend: VLMBackend | None = None

    @property
    def backend(self) -> VLMBackend:
        if self._backend is None:
            model, options = self._weights()
            self._backend = make_backend(
                self.config.backend,
                model=model,
                revision=self.config.revision,
                options=options,
                context=self.context,
            )
        return self._backend

    def _weights(self) -> tuple[str, BackendOptions]:
        """The model and options the backend gets. A model from a train step is its folder, or,
        for a LoRA adapter, its base with the adapter in the backend's ``lora`` option."""
        options = self.config.options
        if not isinstance(self.config.model, StepModel):
            return self.config.model, options
        trained = self.context.model(self.config.model)
        if not trained.adapter:
            return trained.path, options
        if "lora" not in type(options).model_fields or trained.base is None:
            raise EcapError(
                f"step '{self.config.model.step}' trained a LoRA adapter, which backend "
                f"'{self.config.backend}' cannot load; use backend transformers or vllm, or "
                "train with full weights (or merged adapters)"
            )
        return trained.base, options.model_copy(update={"lora": trained.path})

    def fingerprint(self) -> str | None:
        """The weights as configured: a local folder's content hash changes the key."""
        return self.backend.cache_identity().content_hash

    def template_kwargs(self) -> dict[str, Any]:
        """Chat-template arguments sent with every request."""
        return dict(self.config.template_kwargs)

    def request_for(self, item: Item) -> VLMRequest:
        """The request for ``item``, its images prepared (:func:`ecap.images.prepare_image`)."""
        config, pair = self.config, item.pair
        source, target = (
            prepare_image(
                ref, max_pixels=config.max_image_pixels, max_input_pixels=config.max_input_pixels
            )
            for ref in (pair.source, pair.target)
        )
        return self._request(item, source, target)

    def _request(self, item: Item, source: PreparedImage, target: PreparedImage) -> VLMRequest:
        config = self.config
        return VLMRequest(
            prompt=render(config.prompt, item.pair),
            source=source,
            target=target,
            sampling=config.sampling,
            n=config.n,
            system=config.system,
            source_label=config.source_label,
            target_label=config.target_label,
            template_kwargs=self.template_kwargs(),
        )

    def _read(self, batch: Sequence[Item]) -> list[tuple[DeferredImage, ...] | SampleError]:
        """Each pair's images read, checked against their hashes and their headers read: the
        quick part of preparing them, one pair after another."""
        config = self.config
        read: list[tuple[DeferredImage, ...] | SampleError] = []
        for item in batch:
            try:
                read.append(
                    tuple(
                        prepare_image_deferred(
                            ref,
                            max_pixels=config.max_image_pixels,
                            max_input_pixels=config.max_input_pixels,
                        )
                        for ref in (item.pair.source, item.pair.target)
                    )
                )
            except ImageReadError as exc:
                read.append(_image_error(exc))
        return read

    async def acaption(self, batch: Sequence[Item]) -> list[list[Instruction] | SampleError]:
        """Images are read and hash-checked first; their full decode (the slow part) runs on
        every core, and, for a local engine, which decodes them anyway, while the engine works
        on the batch: a pair whose check then fails gets its image error whatever the engine
        answered, and one whose image the decode changed (an EXIF orientation stored after the
        pixels) is asked again with the turned image. A remote API is asked only once the
        images passed, so that no paid call is spent on an image that fails."""
        read = await asyncio.to_thread(self._read, batch)
        results: list[list[Instruction] | SampleError | None] = [
            r if isinstance(r, SampleError) else None for r in read
        ]
        waiting = [(i, r) for i, r in enumerate(read) if not isinstance(r, SampleError)]
        if not waiting:
            return [r for r in results if r is not None]
        confirming = asyncio.to_thread(across_cores, _confirmed, [images for _, images in waiting])
        sent: dict[int, Outcome] = {}
        if isinstance(self.backend, LocalBackend):
            requests = [
                self._request(batch[i], *(image.image for image in images)) for i, images in waiting
            ]
            outcomes, confirmed = await asyncio.gather(self.backend.generate(requests), confirming)
            sent = {i: outcome for (i, _), outcome in zip(waiting, outcomes, strict=True)}
        else:
            confirmed = await confirming
        again: dict[int, VLMRequest] = {}
        for (i, images), checked in zip(waiting, confirmed, strict=True):
            if isinstance(checked, SampleError):
                results[i] = checked
            elif i in sent and checked == tuple(image.image for image in images):
                results[i] = self._result(batch[i], sent[i])
            else:
                again[i] = self._request(batch[i], *checked)
        if again:
            outcomes = await self.backend.generate(list(again.values()))
            for i, outcome in zip(again, outcomes, strict=True):
                results[i] = self._result(batch[i], outcome)
        return [r for r in results if r is not None]

    def _result(self, item: Item, outcome: Outcome) -> list[Instruction] | SampleError:
        return outcome if isinstance(outcome, SampleError) else self._instructions(item, outcome)

    def _instructions(self, item: Item, generation: Generation) -> list[Instruction] | SampleError:
        config = self.config
        if len(generation.texts) != config.n:
            return SampleError(
                error_type="BackendError",
                message=f"asked for {config.n} answers, got {len(generation.texts)}",
            )
        identity = self.backend.identity()
        instructions = []
        for candidate, raw in enumerate(generation.texts):
            label = f"candidate {candidate}: " if config.n > 1 else ""
            try:
                if generation.finish_reason(candidate) == TRUNCATED and not config.keep_truncated:
                    raise UnusableAnswer(
                        "Truncated",
                        f"the answer was cut off at max_new_tokens="
                        f"{config.sampling.max_new_tokens}: {raw[:80]!r}...",
                    )
                cleaned = clean_answer(
                    raw,
                    strip_thinking=config.strip_thinking,
                    strip_box_tokens=config.strip_box_tokens,
                    max_chars=config.max_answer_chars,
                )
            except UnusableAnswer as exc:
                self.backend.discard(generation, candidate, str(exc))
                return SampleError(error_type=exc.kind, message=label + str(exc))
            tokens_in, tokens_out = generation.tokens_of(candidate)
            meta: dict[str, Any] = {
                "backend": config.backend,
                "model": identity.as_dict(),
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                **generation.meta,
            }
            finish = generation.finish_reason(candidate)
            if finish is not None:
                meta["finish_reason"] = finish
            if cleaned.text != raw:
                meta["raw"] = raw
            if cleaned.reasoning:
                meta["reasoning"] = cleaned.reasoning
            instructions.append(
                Instruction(
                    pair_id=item.pair.id,
                    text=cleaned.text,
                    origin="model",
                    author=identity.label(),
                    candidate=candidate,
                    meta=meta,
                )
            )
        return instructions

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def _image_error(exc: ImageReadError) -> SampleError:
    kind = "ImageChanged" if isinstance(exc, ImageChanged) else "ImageError"
    return SampleError(error_type=kind, message=str(exc))


def _confirmed(images: tuple[DeferredImage, ...]) -> tuple[PreparedImage, ...] | SampleError:
    """A pair's images, fully decoded (:meth:`DeferredImage.confirm`), or why one failed."""
    try:
        return tuple(image.confirm() for image in images)
    except ImageReadError as exc:
        return _image_error(exc)


__all__ = ["VLMCaptioner", "VLMCaptionerConfig"]
