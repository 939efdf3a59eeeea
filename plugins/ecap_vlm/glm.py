"""The ``glm`` captioner: GLM-4.5V (the paper's captioner) with its defaults.

By default it calls Zhipu's hosted API (``https://open.bigmodel.cn/api/paas/v4``, key in
``$ZHIPU_API_KEY``; Z.AI's international endpoint is ``https://api.z.ai/api/paas/v4``) through the
``openai-compatible`` backend; ``backend: transformers`` or ``vllm`` with ``model:
zai-org/GLM-4.5V`` runs the open weights instead, and ``base_url`` may point at a ``vllm serve``.

GLM-4.5V thinks before answering unless told not to, and how to tell it depends on the server: the
hosted API takes a ``thinking: {type: enabled|disabled}`` request field, while vLLM, SGLang and
transformers take the chat-template argument ``enable_thinking``. ``thinking_control: auto``
picks the API field for Zhipu's and Z.AI's hosts and the template argument everywhere else.
Whatever the model thinks is kept out of the instruction, and so are its box markers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from ecap.vlm import Sampling

from .captioner import VLMCaptioner, VLMCaptionerConfig

ZHIPU_API = "https://open.bigmodel.cn/api/paas/v4"
API_HOSTS = ("open.bigmodel.cn", "api.z.ai")
#: Options the openai-compatible backend gets unless the spec says otherwise; the key is then
#: $ZHIPU_API_KEY, Zhipu's standard variable (see ecap.providers.KNOWN_HOSTS).
API_DEFAULTS = {"base_url": ZHIPU_API}


class GLMCaptionerConfig(VLMCaptionerConfig):
    model: str = Field("glm-4.5v", description="API model name, hub id or local folder")
    backend: str = Field("openai-compatible", description="where GLM-4.5V runs")
    sampling: Sampling = Field(
        default_factory=lambda: Sampling(max_new_tokens=1024),
        description="decoding parameters (thinking needs room: 1024 tokens by default)",
    )
    thinking: bool = Field(False, description="let the model think before it answers")
    thinking_control: Literal["auto", "api", "chat-template"] = Field(
        "auto", description="how to switch thinking: the API's field or the chat template's"
    )

    backend_defaults: ClassVar[dict[str, dict[str, Any]]] = {"openai-compatible": API_DEFAULTS}

    @model_validator(mode="after")
    def _thinking_field(self) -> GLMCaptionerConfig:
        if self.thinking_control == "api" and self.backend != "openai-compatible":
            raise ValueError(
                f"thinking_control: api sends the hosted API's request field, which backend "
                f"{self.backend!r} has no way to send; use chat-template (or auto)"
            )
        if self.control() == "api":
            extra = dict(getattr(self.options, "extra_body", {}))
            extra.setdefault("thinking", {"type": "enabled" if self.thinking else "disabled"})
            self.options = self.options.model_copy(update={"extra_body": extra})
        return self

    def control(self) -> Literal["api", "chat-template"]:
        if self.thinking_control != "auto":
            return self.thinking_control
        base_url = getattr(self.options, "base_url", None)
        host = urlparse(base_url).hostname if base_url else None
        if self.backend == "openai-compatible" and host in API_HOSTS:
            return "api"
        return "chat-template"


class GLMCaptioner(VLMCaptioner):
    """GLM-4.5V: hosted by default, or local weights on any backend."""

    Config = GLMCaptionerConfig
    config: GLMCaptionerConfig

    def template_kwargs(self) -> dict[str, Any]:
        kwargs = super().template_kwargs()
        if self.config.control() == "chat-template":
            kwargs.setdefault("enable_thinking", self.config.thinking)
        return kwargs


__all__ = ["GLMCaptioner", "GLMCaptionerConfig"]
