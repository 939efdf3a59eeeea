"""The ``gemini`` backend: Google's Gemini models through the google-genai SDK, natively.

The shared message layout becomes Gemini contents part for part (:mod:`ecap.providers.gemini`,
as the judges send it): the label texts, the two images as inline bytes (source first) and the
prompt; a system prompt becomes ``system_instruction``. Thinking is configured with
``thinking_level`` (Gemini 3) or ``thinking_budget`` (Gemini 2.5); the answer text excludes
thought parts. ``base_url`` points the SDK at another endpoint (a proxy, or ecap.testing's fake
server).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import Field

from ecap.errors import EcapError
from ecap.interfaces import transport_field
from ecap.providers import gemini, two_image_layout
from ecap.remote import Reply
from ecap.vlm import TRUNCATED, VLMRequest

from .remote import RemoteBackend, RemoteOptions

PLUGIN = "vlm (gemini backend)"


class GeminiOptions(RemoteOptions):
    api_version: str | None = transport_field(None, description="e.g. v1beta (default: SDK's)")
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="Gemini 3's thinking level"
    )
    thinking_budget: int | None = Field(None, ge=-1, description="Gemini 2.5: thinking tokens")
    extra_config: dict[str, Any] = Field(
        default_factory=dict, description="more GenerateContentConfig fields"
    )


def gemini_unsupported(repetition_penalty: float | None, template_kwargs: Any) -> str | None:
    """Why a request cannot go to Gemini as asked, or None: it has no repetition penalty and no
    chat template, and silently dropping either would answer another question than the spec's."""
    if repetition_penalty is not None:
        return "the gemini backend has no repetition_penalty; remove sampling.repetition_penalty"
    if template_kwargs:
        return (
            "the gemini backend has no chat template; remove template_kwargs "
            f"({', '.join(sorted(template_kwargs))})"
        )
    return None


class GeminiBackend(RemoteBackend):
    name = "gemini"
    Options = GeminiOptions
    options: GeminiOptions
    standard_key: ClassVar[tuple[str, ...]] = gemini.STANDARD_KEY

    def make_client(self) -> gemini.Gemini:
        return gemini.connect(
            self.options,
            timeout=self.options.timeout,
            api_version=self.options.api_version,
            plugin=PLUGIN,
        )

    def config(self, types: Any, request: VLMRequest, candidate: int) -> Any:
        sampling, options = request.sampling, self.options
        unsupported = gemini_unsupported(sampling.repetition_penalty, request.template_kwargs)
        if unsupported:
            raise EcapError(unsupported)
        fields: dict[str, Any] = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_output_tokens": sampling.max_new_tokens,
            "candidate_count": 1,
        }
        if request.system:
            fields["system_instruction"] = request.system
        seed = self.seed(request, candidate)
        if seed is not None:
            fields["seed"] = seed
        if sampling.top_k is not None:
            fields["top_k"] = sampling.top_k
        if options.thinking_level is not None or options.thinking_budget is not None:
            thinking: dict[str, Any] = {}
            if options.thinking_level is not None:
                thinking["thinking_level"] = options.thinking_level
            if options.thinking_budget is not None:
                thinking["thinking_budget"] = options.thinking_budget
            fields["thinking_config"] = types.ThinkingConfig(**thinking)
        return types.GenerateContentConfig(**{**fields, **options.extra_config})

    async def send(self, request: VLMRequest, candidate: int) -> Reply:
        client: gemini.Gemini = self.client()
        images = [(image.data, image.mime) for image in (request.source, request.target)]
        layout = two_image_layout((request.source_label, request.target_label), request.prompt)
        reply = await client.generate(
            self.model,
            client.parts(layout, images),
            self.config(client.types, request, candidate),
            self.pacer,
        )
        if reply.finish_reason == "MAX_TOKENS":
            reply = dataclasses.replace(reply, finish_reason=TRUNCATED)
        return reply


__all__ = ["GeminiBackend", "GeminiOptions", "gemini_unsupported"]
