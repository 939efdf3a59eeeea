"""The contract every VLM backend implements, so that any plugin that runs a VLM (captioners, the
EditScore filter, sampling from trained models) can run it on any backend by config alone.

A backend is built with the model to run and its own options::

    backend = make_backend("transformers", model="Qwen/Qwen3-VL-8B-Instruct", revision=None,
                           options={"dtype": "bfloat16"}, context=plugin_context)
    outcomes = await backend.generate([VLMRequest(prompt=..., source=..., target=..., ...)])

**Input.** A :class:`VLMRequest` is one prompt with two images, the source first and the target
second, the :class:`Sampling` parameters and ``n``, the number of candidates wanted. The images are
:class:`ImageInput` (:class:`ecap.images.PreparedImage`: encoded bytes, mime type, sha256), already
upright, RGB and capped in size by :func:`ecap.images.prepare_image`, so every backend sees exactly
the same pixels. :meth:`VLMRequest.messages` renders the one message
layout every backend must use (OpenAI-style chat content: source label, source image, target label,
target image, prompt); a backend translates that layout into its own API, it never invents
another. ``template_kwargs`` go to the model's chat template (``enable_thinking`` ...): local
backends pass them to ``apply_chat_template``, servers get them as ``chat_template_kwargs``.

**Output.** :meth:`VLMBackend.generate` returns one outcome per request, in order: a
:class:`Generation` holding exactly ``n`` raw texts (the model's answer as decoded, before any
cleaning: the caller strips thinking and box tokens and judges whether an answer is usable) and,
per text, its ``finish_reason`` (``"length"`` when it hit ``max_new_tokens``: the caller then
refuses it, since a cut-off answer is not an instruction), or a
:class:`~ecap.records.SampleError` when that request alone failed (an image the model cannot
take, a request the server refused, an answer that never came after the retries). One bad request
must never fail the others. ``generate`` raises only when the whole call failed transiently (the
runner then retries the batch), or an :class:`~ecap.errors.EcapError` for a setup problem (a missing
extra, a model that cannot be loaded, a missing API key): that fails the step once, with its
message, instead of every pair with a copy of it. Local backends remember a failed load and raise
it again at once rather than loading again per batch.

**Identity.** :meth:`VLMBackend.identity` names the weights that answer, so that every stored
instruction says which model wrote it: a hub id with its revision (a commit), a local folder with
the sha256 of its files, or an API model name. The default, :meth:`VLMBackend.cache_identity`,
is the model as configured (a local folder with its content hash, computed once per backend and
cached on disk by file); it is what the step's cache key uses, because it is known before anything
is loaded. A backend that learns more when it loads (the hub commit that was downloaded) overrides
:meth:`VLMBackend.identity` to say so; that is what instructions record.

**Local backends** (transformers, vLLM's offline engine) subclass :class:`LocalBackend` and
implement the synchronous :meth:`LocalBackend.generate_batch`; the base runs it in a worker thread,
one batch at a time, halves the batch and retries when the accelerator runs out of memory, and
isolates a request that breaks a whole batch by retrying the batch's requests one by one.

**Remote backends** (OpenAI-compatible servers, Gemini) subclass
:class:`ecap_vlm.backends.remote.RemoteBackend`, which adds the store's call log, rate limits and
retries around one call per candidate.

**Registration.** A plugin's ``register_vlm_backends(register)`` hook calls
``register(name, "module:Class")`` (or the class itself) for each backend it offers; ``backend:``
in a spec names one. A module is imported only when its backend is used, and must not import torch,
vLLM or an SDK at module level (use :func:`ecap.interfaces.require` inside). A backend's
:attr:`VLMBackend.Options` model validates the spec's ``options:`` block.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from ..errors import EcapError
from ..images import PreparedImage
from ..interfaces import PluginConfig, PluginContext
from ..models import ModelIdentity, describe_model
from ..providers import two_image_content
from ..records import SampleError

#: One image as sent to a model: what :func:`ecap.images.prepare_image` returns.
ImageInput = PreparedImage

#: ``Generation.finish_reasons`` value of an answer cut off by ``max_new_tokens``.
TRUNCATED = "length"


class Sampling(PluginConfig):
    """How to decode. Every field changes the answer, so all of them are in the cache key."""

    max_new_tokens: int = Field(256, ge=1, description="the longest answer, in tokens")
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = Field(0, description="sampling seed, where the backend takes one")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class VLMRequest:
    """One prompt over (source, target), asking for ``n`` answers."""

    prompt: str
    source: ImageInput
    target: ImageInput
    sampling: Sampling
    n: int = 1
    system: str | None = None
    source_label: str | None = "Source image:"
    target_label: str | None = "Target image:"
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def content(self) -> list[dict[str, Any]]:
        """The user turn, OpenAI-style, images as data URIs: the layout every backend uses."""
        return two_image_content(
            (self.source_label, self.source.data_uri()),
            (self.target_label, self.target.data_uri()),
            self.prompt,
        )

    def messages(self) -> list[dict[str, Any]]:
        """The whole chat: the optional system turn, then the user turn of :meth:`content`."""
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.content()})
        return messages

    def identity(self) -> dict[str, Any]:
        """What the answers depend on, images by hash: the basis of call-log keys."""
        return {
            "system": self.system,
            "prompt": self.prompt,
            "labels": [self.source_label, self.target_label],
            "images": [self.source.sha256, self.target.sha256],
            "sampling": self.sampling.model_dump(),
            "template_kwargs": dict(self.template_kwargs),
        }


@dataclass(frozen=True)
class Generation:
    """A request's ``n`` raw answers, in candidate order, with what they cost.

    ``keys`` are the call-log keys of remote answers (one per text; empty for local backends), so
    that an answer the caller finds unusable can be :meth:`VLMBackend.discard`-ed.
    ``finish_reasons`` says per text why it ended (:data:`TRUNCATED` when ``max_new_tokens`` cut
    it off); empty when the backend cannot tell. ``candidate_tokens`` is (in, out) per text when
    known; otherwise :meth:`tokens_of` splits the totals evenly, so stored counts add up.
    ``deterministic``: asking again would give the same texts (greedy decoding).
    """

    texts: tuple[str, ...]
    tokens_in: int = 0
    tokens_out: int = 0
    keys: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    finish_reasons: tuple[str | None, ...] = ()
    candidate_tokens: tuple[tuple[int, int], ...] = ()
    deterministic: bool = False

    def finish_reason(self, candidate: int) -> str | None:
        return self.finish_reasons[candidate] if candidate < len(self.finish_reasons) else None

    def tokens_of(self, candidate: int) -> tuple[int, int]:
        """(tokens in, tokens out) of one candidate; over all candidates they sum to the totals."""
        if len(self.candidate_tokens) == len(self.texts):
            return self.candidate_tokens[candidate]
        n = len(self.texts)

        def share(total: int) -> int:
            return total // n + (1 if candidate < total % n else 0)

        return share(self.tokens_in), share(self.tokens_out)


Outcome = Generation | SampleError


class BackendOptions(PluginConfig):
    """Base of a backend's ``options:`` block. Mark throughput-only fields with
    :func:`ecap.interfaces.transport_field` so they stay out of cache keys."""


class VLMBackend(ABC):
    """Runs one model. See the module docstring for the contract."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(
        self, model: str, revision: str | None, options: BackendOptions, context: PluginContext
    ) -> None:
        self.model = model
        self.revision = revision
        self.options = options
        self.context = context
        self._cache_identity: ModelIdentity | None = None

    def cache_identity(self) -> ModelIdentity:
        """The model as configured: a local folder (relative to the spec) with the sha256 of its
        weight and processing files, or the id and revision as written. Stable, so it can key the
        step's cache; computed once per backend (a folder is not walked per pair)."""
        if self._cache_identity is None:
            self._cache_identity = describe_model(self.model, self.revision, self.context.base_dir)
        return self._cache_identity

    def identity(self) -> ModelIdentity:
        """The weights that answer, as precisely as known now (see the module docstring)."""
        return self.cache_identity()

    @abstractmethod
    async def generate(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        """One outcome per request, in order."""

    def discard(self, generation: Generation, index: int, reason: str) -> None:  # noqa: B027
        """The caller found answer ``index`` unusable: never serve it again from a cache."""

    def close(self) -> None:  # noqa: B027 - optional
        """Free the model or the network clients."""


class LocalBackend(VLMBackend):
    """A model in this process: batches run one at a time in a worker thread.

    ``batch_limit`` starts unbounded and halves each time a batch runs out of accelerator memory;
    it is kept for later batches, so one OOM costs one retry, not one per batch.
    """

    def __init__(
        self, model: str, revision: str | None, options: BackendOptions, context: PluginContext
    ) -> None:
        super().__init__(model, revision, options, context)
        self.batch_limit: int | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def generate_batch(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        """Run these requests together (they fit the current batch limit)."""

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the accelerator ran out of memory (then free what you can)."""
        return type(exc).__name__ in ("OutOfMemoryError", "OutOfMemoryException")

    async def generate(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        """All requests, in chunks of at most ``batch_limit``, serialised across threads."""
        with self._lock:
            outcomes: list[Outcome] = []
            start = 0
            while start < len(requests):
                size = min(self.batch_limit or len(requests), len(requests) - start)
                chunk = requests[start : start + size]
                try:
                    outcomes.extend(self._checked(chunk))
                except Exception as exc:
                    if not self.is_out_of_memory(exc):
                        raise
                    if size == 1:
                        outcomes.append(_oom_error(exc))
                    else:
                        self.batch_limit = max(1, size // 2)
                        self.context.logger.warning(
                            "out of memory with %d requests per batch; retrying with %d",
                            size,
                            self.batch_limit,
                        )
                        continue
                start += len(chunk)
            return outcomes

    def _checked(self, chunk: Sequence[VLMRequest]) -> list[Outcome]:
        """``generate_batch``, but a chunk that raises for another reason than memory is run
        again request by request, so one bad request fails alone."""
        try:
            outcomes = self.generate_batch(chunk)
        except EcapError:
            raise  # a setup problem: the step fails once, not every request with a copy of it
        except Exception as exc:
            if self.is_out_of_memory(exc):
                raise
            if len(chunk) == 1:
                return [SampleError.from_exception(exc)]
            self.context.logger.warning(
                "a batch of %d failed (%s: %s); running its requests one by one",
                len(chunk),
                type(exc).__name__,
                exc,
            )
            return [outcome for request in chunk for outcome in self._checked([request])]
        if len(outcomes) != len(chunk):
            raise RuntimeError(
                f"{self.name} returned {len(outcomes)} outcomes for {len(chunk)} requests"
            )
        return outcomes


def _oom_error(exc: BaseException) -> SampleError:
    return SampleError(
        error_type="OutOfMemory", message=f"one request alone does not fit in memory: {exc}"
    )


__all__ = [
    "TRUNCATED",
    "BackendOptions",
    "Generation",
    "ImageInput",
    "LocalBackend",
    "ModelIdentity",
    "Outcome",
    "Sampling",
    "VLMBackend",
    "VLMRequest",
]
