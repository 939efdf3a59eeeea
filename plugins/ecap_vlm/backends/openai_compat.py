"""The ``openai-compatible`` backend: Chat Completions over HTTP, async.

One protocol reaches most hosted and self-hosted VLMs: ``vllm serve`` and SGLang, Zhipu's GLM API
(``https://open.bigmodel.cn/api/paas/v4``), OpenAI, Moonshot (Kimi), Alibaba's DashScope
compatible mode (Qwen), gateways. The request is the shared message layout with both images as
``data:`` URIs, source first (:mod:`ecap.providers.openai`, as the judges send it). Fields outside
the OpenAI standard are sent only when set: ``top_k`` and ``repetition_penalty`` (vLLM, SGLang),
``chat_template_kwargs`` (vLLM, SGLang: e.g. ``enable_thinking``); ``extra_body`` adds anything
else a server needs (GLM's ``thinking``).

Servers that return the model's reasoning apart (``reasoning_content``, as GLM's API and vLLM with a
reasoning parser do) have it put back in front of the answer between ``<think>`` tags, so the
captioner's cleaning treats every server alike and can tell a thinking-only answer from an empty
one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import Field

from ecap.interfaces import transport_field
from ecap.providers import openai
from ecap.remote import Reply
from ecap.vlm import TRUNCATED, VLMRequest

from .remote import RemoteBackend, RemoteOptions

PLUGIN = "vlm (openai-compatible backend)"


class OpenAICompatibleOptions(RemoteOptions):
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
    standard_key: ClassVar[tuple[str, ...]] = openai.STANDARD_KEY

    def make_client(self) -> Any:
        return openai.make_client(self.options, timeout=self.options.timeout, plugin=PLUGIN)

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
        reply = await openai.post_chat_completion(
            self.client(), self.body(request, candidate), PLUGIN, self.pacer
        )
        return _with_reasoning_inline(reply)


def _with_reasoning_inline(reply: Reply) -> Reply:
    """Reasoning returned apart put back in front of the answer between ``<think>`` tags, so
    that cleaning treats every server alike; a cut-off answer marked :data:`TRUNCATED`."""
    text = f"<think>{reply.reasoning}</think>{reply.text}" if reply.reasoning else reply.text
    finish = TRUNCATED if reply.finish_reason == "length" else reply.finish_reason
    return dataclasses.replace(reply, text=text, finish_reason=finish, reasoning=None)


__all__ = ["OpenAICompatibleBackend", "OpenAICompatibleOptions"]
