"""The ``openai-compatible`` backend: Chat Completions over HTTP, async.

One protocol reaches most hosted and self-hosted VLMs: ``vllm serve`` and SGLang, Zhipu's GLM API
(``https://open.bigmodel.cn/api/paas/v4``), OpenAI, Moonshot (Kimi), Alibaba's DashScope
compatible mode (Qwen), gateways. The request is the shared message layout with both images as
``data:`` URIs, source first. Fields outside the OpenAI standard are sent only when set: ``top_k``
and ``repetition_penalty`` (vLLM, SGLang), ``chat_template_kwargs`` (vLLM, SGLang: e.g.
``enable_thinking``); ``extra_body`` adds anything else a server needs (GLM's ``thinking``).

Servers that return the model's reasoning apart (``reasoning_content``, as GLM's API and vLLM with a
reasoning parser do) have it put back in front of the answer between ``<think>`` tags, so the
captioner's cleaning treats every server alike and can tell a thinking-only answer from an empty
one. The openai SDK's own retries are off: :class:`ecap.remote.RemoteCaller` retries, honouring
Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from pydantic import Field

from ecap.interfaces import require, transport_field
from ecap.remote import RETRY_STATUS, Retryable, is_transport_error, retry_after

from .base import VLMRequest
from .remote import RemoteBackend, RemoteOptions, Reply

EXTRA = "api"
PLUGIN = "vlm (openai-compatible backend)"


class OpenAICompatibleOptions(RemoteOptions):
    api_key_env: str | None = transport_field(
        "OPENAI_API_KEY", description="environment variable to read the key from"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="more request fields, e.g. {thinking: {type: disabled}}"
    )
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = transport_field(
        "max_tokens", description="how this server names the answer-length limit"
    )


class OpenAICompatibleBackend(RemoteBackend):
    name = "openai-compatible"
    Options = OpenAICompatibleOptions
    options: OpenAICompatibleOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._openai: Any = None

    def client(self) -> Any:
        """The SDK client, made on first use inside the event loop that runs the calls."""
        if self._client is None:
            self._openai = require("openai", EXTRA, PLUGIN)
            self._client = self._openai.AsyncOpenAI(
                api_key=self.options.key() or "unset",
                base_url=self.options.base_url,
                max_retries=0,
                timeout=self.options.timeout,
            )
        return self._client

    def body(self, request: VLMRequest, candidate: int) -> dict[str, Any]:
        """The request body for one candidate."""
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages(),
            self.options.max_tokens_field: sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        seed = self.seed(request, candidate)
        if seed is not None:
            body["seed"] = seed
        if sampling.top_k is not None:
            body["top_k"] = sampling.top_k
        if sampling.repetition_penalty is not None:
            body["repetition_penalty"] = sampling.repetition_penalty
        if request.template_kwargs:
            body["chat_template_kwargs"] = dict(request.template_kwargs)
        return {**body, **self.options.extra_body}

    async def send(self, request: VLMRequest, candidate: int) -> Reply:
        client = self.client()
        try:
            # Posted as built: the typed create() would re-validate every nested part.
            response = await client.post(
                "/chat/completions", body=self.body(request, candidate), cast_to=dict[str, Any]
            )
        except self._openai.APIStatusError as exc:
            if exc.status_code in RETRY_STATUS:
                raise Retryable(str(exc), retry_after(exc.response)) from exc
            raise
        except Exception as exc:
            if is_transport_error(exc):
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            raise
        if not isinstance(response, dict):  # a body that is not JSON comes back as text
            raise Retryable(f"the answer is not JSON: {str(response)[:80]!r}")
        return _reply(response)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the loop that owned its connections has ended
                asyncio.run(client.close())


def _reply(body: dict[str, Any]) -> Reply:
    choices = body.get("choices") or []
    if not choices:
        raise Retryable(f"the answer has no choices: {str(body)[:120]!r}")
    message = choices[0].get("message") or {}
    text = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = f"<think>{reasoning}</think>{text}"
    usage = body.get("usage") or {}
    meta = {"finish_reason": choices[0].get("finish_reason"), "served_model": body.get("model")}
    return Reply(
        text=text,
        tokens_in=usage.get("prompt_tokens") or 0,
        tokens_out=usage.get("completion_tokens") or 0,
        meta=meta,
    )


__all__ = ["OpenAICompatibleBackend", "OpenAICompatibleOptions"]
