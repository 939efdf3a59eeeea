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

from typing import Any, Literal

from pydantic import Field

from ecap.interfaces import require, transport_field
from ecap.remote import (
    Reply,
    openai_reply,
    post_chat_completion,
)

from ecap.vlm import TRUNCATED, VLMRequest
from .remote import RemoteBackend, RemoteOptions

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
        self._openai: Any = None

    def make_client(self) -> Any:
        self._openai = require("openai", EXTRA, PLUGIN)
        return self._openai.AsyncOpenAI(
            api_key=self.options.key(),
            base_url=self.options.base_url,
            max_retries=0,
            timeout=self.options.timeout,
        )

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
        response = await post_chat_completion(self._openai, client, self.body(request, candidate))
        return _reply(response)


def _reply(body: dict[str, Any]) -> Reply:
    """The shared Chat Completions parsing, with reasoning returned apart put back in front of
    the answer between ``<think>`` tags, so that cleaning treats every server alike."""
    reply = openai_reply(body)
    text = f"<think>{reply.reasoning}</think>{reply.text}" if reply.reasoning else reply.text
    finish = TRUNCATED if reply.finish_reason == "length" else reply.finish_reason
    return Reply(
        text=text,
        tokens_in=reply.tokens_in,
        tokens_out=reply.tokens_out,
        finish_reason=finish,
        served_model=reply.served_model,
    )


__all__ = ["OpenAICompatibleBackend", "OpenAICompatibleOptions"]
