"""Google's Gemini models through the ``google-genai`` SDK, natively, with its own retries off
(it ignores Retry-After): :class:`ecap.remote.RemoteCaller` retries instead. ``base_url`` points
the SDK at another endpoint (a proxy, or ecap.testing's fake server)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..interfaces import require
from ..remote import Pacer, Reply, retry_after, transient_failures
from . import HostedEndpoint
from .limits import google_signal, refused

#: Where the key of Google's own API is read from when ``api_key`` is unset (the SDK's order).
STANDARD_KEY = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
EXTRA = "api"


@dataclass(frozen=True)
class Gemini:
    """A client with the SDK modules that build its requests and name its errors."""

    client: Any
    types: Any
    errors: Any

    def parts(self, layout: Sequence[str | int], images: Sequence[tuple[bytes, str]]) -> Any:
        """:func:`ecap.providers.two_image_layout` as one Gemini user turn, part for part: texts
        as text, image ``i`` as the inline ``images[i]`` (bytes, mime type)."""
        types = self.types
        parts = [
            types.Part.from_text(text=part)
            if isinstance(part, str)
            else types.Part.from_bytes(data=images[part][0], mime_type=images[part][1])
            for part in layout
        ]
        return [types.Content(role="user", parts=parts)]

    async def generate(
        self, model: str, contents: Any, config: Any, pacer: Pacer | None = None
    ) -> Reply:
        """One ``generateContent`` call; transient failures become
        :class:`~ecap.remote.Retryable`, a 429 :class:`~ecap.remote.RateLimited` with
        what its body says (the per-minute quota, ``RetryInfo``), told to ``pacer``."""
        with transient_failures(self.errors.APIError, lambda exc: exc.code):
            try:
                response = await self.client.aio.models.generate_content(
                    model=model, contents=contents, config=config
                )
            except self.errors.APIError as exc:
                if exc.code != 429:
                    raise
                signal = google_signal(exc.details)
                if signal.wait is None:  # a proxy may say it in a header instead
                    signal = replace(signal, wait=retry_after(exc.response))
                raise refused(signal, exc, pacer) from exc
        return reply(response)


def connect(
    endpoint: HostedEndpoint, *, timeout: float, api_version: str | None, plugin: str
) -> Gemini:
    """A client for ``endpoint`` (``timeout`` in seconds, ``api_version`` such as v1beta)."""
    genai = require("google.genai", EXTRA, plugin)
    types = require("google.genai.types", EXTRA, plugin)
    errors = require("google.genai.errors", EXTRA, plugin)
    http: dict[str, Any] = {"timeout": int(timeout * 1000)}
    if endpoint.base_url:
        http["base_url"] = endpoint.base_url
    if api_version:
        http["api_version"] = api_version
    client = genai.Client(
        api_key=endpoint.require_key(STANDARD_KEY), http_options=types.HttpOptions(**http)
    )
    return Gemini(client, types, errors)


def reply(response: Any) -> Reply:
    """A ``GenerateContentResponse``: the text without thought parts, thought tokens counted as
    output (Gemini bills them), the finish reason by name (``MAX_TOKENS``...)."""
    usage = response.usage_metadata
    finish = None
    if response.candidates:
        reason = response.candidates[0].finish_reason
        finish = getattr(reason, "name", reason)
    return Reply(
        text=response.text or "",
        tokens_in=(usage.prompt_token_count or 0) if usage else 0,
        tokens_out=(
            (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) if usage else 0
        ),
        finish_reason=None if finish is None else str(finish),
        served_model=getattr(response, "model_version", None),
    )


__all__ = ["STANDARD_KEY", "Gemini", "connect", "reply"]
