"""The ``gemini`` backend: Google's Gemini models through the google-genai SDK, natively.

The shared message layout becomes Gemini contents part for part: the label texts, the two images
as inline bytes (source first) and the prompt; a system prompt becomes ``system_instruction``.
Thinking is configured with ``thinking_level`` (Gemini 3) or ``thinking_budget`` (Gemini 2.5);
the answer text excludes thought parts. The SDK's retries are off (it ignores Retry-After):
:class:`ecap.remote.RemoteCaller` retries instead. ``base_url`` points the SDK at another endpoint
(a proxy, or ecap.testing's fake server).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import Field

from ecap.interfaces import require, transport_field
from ecap.remote import RETRY_STATUS, Retryable, is_transport_error, retry_after

from .base import VLMRequest
from .remote import RemoteBackend, RemoteOptions, Reply

EXTRA = "api"
PLUGIN = "vlm (gemini backend)"


class GeminiOptions(RemoteOptions):
    api_key_env: str | None = transport_field(
        "GEMINI_API_KEY", description="environment variable to read the key from"
    )
    api_version: str | None = transport_field(None, description="e.g. v1beta (default: SDK's)")
    thinking_level: str | None = Field(None, description="Gemini 3: low or high")
    thinking_budget: int | None = Field(None, ge=-1, description="Gemini 2.5: thinking tokens")
    extra_config: dict[str, Any] = Field(
        default_factory=dict, description="more GenerateContentConfig fields"
    )


class GeminiBackend(RemoteBackend):
    name = "gemini"
    Options = GeminiOptions
    options: GeminiOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._types: Any = None
        self._errors: Any = None

    def client(self) -> Any:
        if self._client is None:
            genai = require("google.genai", EXTRA, PLUGIN)
            self._types = require("google.genai.types", EXTRA, PLUGIN)
            self._errors = require("google.genai.errors", EXTRA, PLUGIN)
            http: dict[str, Any] = {"timeout": int(self.options.timeout * 1000)}
            if self.options.base_url:
                http["base_url"] = self.options.base_url
            if self.options.api_version:
                http["api_version"] = self.options.api_version
            self._client = genai.Client(
                api_key=self.options.key(), http_options=self._types.HttpOptions(**http)
            )
        return self._client

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
        try:
            response = await client.aio.models.generate_content(
                model=self.model,
                contents=self.contents(request),
                config=self.config(request, candidate),
            )
        except self._errors.APIError as exc:
            if exc.code in RETRY_STATUS:
                raise Retryable(str(exc), retry_after(exc.response)) from exc
            raise
        except Exception as exc:
            if is_transport_error(exc):
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            raise
        usage = response.usage_metadata
        finish = None
        if response.candidates:
            reason = response.candidates[0].finish_reason
            finish = getattr(reason, "name", reason)
        return Reply(
            text=response.text or "",
            tokens_in=(usage.prompt_token_count or 0) if usage else 0,
            tokens_out=(
                (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
                if usage
                else 0
            ),
            meta={"finish_reason": finish, "served_model": response.model_version},
        )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the loop that owned its connections has ended
                asyncio.run(client.aio.aclose())


__all__ = ["GeminiBackend", "GeminiOptions"]
