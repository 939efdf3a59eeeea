"""The ``gemini`` backend: Google's Gemini models through the google-genai SDK, natively.

The shared message layout becomes Gemini contents part for part: the label texts, the two images
as inline bytes (source first) and the prompt; a system prompt becomes ``system_instruction``.
Thinking is configured with ``thinking_level`` (Gemini 3) or ``thinking_budget`` (Gemini 2.5);
the answer text excludes thought parts. The SDK's retries are off (it ignores Retry-After):
:class:`ecap.remote.RemoteCaller` retries instead. ``base_url`` points the SDK at another endpoint
(a proxy, or ecap.testing's fake server).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field

from ecap.errors import EcapError
from ecap.interfaces import require, transport_field
from ecap.remote import (
    Reply,
    gemini_reply,
    transient_failures,
)

from ecap.vlm import TRUNCATED, VLMRequest
from .remote import RemoteBackend, RemoteOptions

EXTRA = "api"
PLUGIN = "vlm (gemini backend)"


class GeminiOptions(RemoteOptions):
    api_key_env: str | None = transport_field(
        "GEMINI_API_KEY", description="environment variable to read the key from"
    )
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: Any = None
        self._errors: Any = None

    def make_client(self) -> Any:
        genai = require("google.genai", EXTRA, PLUGIN)
        self._types = require("google.genai.types", EXTRA, PLUGIN)
        self._errors = require("google.genai.errors", EXTRA, PLUGIN)
        http: dict[str, Any] = {"timeout": int(self.options.timeout * 1000)}
        if self.options.base_url:
            http["base_url"] = self.options.base_url
        if self.options.api_version:
            http["api_version"] = self.options.api_version
        return genai.Client(
            api_key=self.options.key(), http_options=self._types.HttpOptions(**http)
        )

    def contents(self, request: VLMRequest) -> list[Any]:
        """The user turn of the shared layout, as Gemini parts in the same order."""
        types = self._types
        images = iter((request.source, request.target))
        parts = []
        for part in request.content():
            if part["type"] == "text":
                parts.append(types.Part.from_text(text=part["text"]))
            else:
                image = next(images)
                parts.append(types.Part.from_bytes(data=image.data, mime_type=image.mime))
        return [types.Content(role="user", parts=parts)]

    def config(self, request: VLMRequest, candidate: int) -> Any:
        types, sampling, options = self._types, request.sampling, self.options
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
        client = self.client()
        with transient_failures(self._errors.APIError, lambda exc: exc.code):
            response = await client.aio.models.generate_content(
                model=self.model,
                contents=self.contents(request),
                config=self.config(request, candidate),
            )
        reply = gemini_reply(response)
        if reply.finish_reason == "MAX_TOKENS":
            reply = dataclasses.replace(reply, finish_reason=TRUNCATED)
        return reply


__all__ = ["GeminiBackend", "GeminiOptions", "gemini_unsupported"]
