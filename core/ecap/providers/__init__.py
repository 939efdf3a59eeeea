"""Hosted models: what judges and captioners share to call Gemini and OpenAI-compatible servers.

One layer for every plugin that pays for a hosted model, whatever it asks: the LLM judges
(:mod:`ecap_judges`) and the API captioners (:mod:`ecap_vlm`'s ``openai-compatible`` and
``gemini`` backends) build their clients, messages and answers here, so both follow the same
conventions:

- **One key convention.** :class:`HostedEndpoint` is the ``base_url`` and ``api_key`` of every
  such plugin. Write the key as ``api_key: ${env:VAR}`` (the spec stores the reference, never the
  key). Without ``api_key``, a call to the provider's own API (no ``base_url``) uses the
  provider's standard variable (``OPENAI_API_KEY``; ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``), a
  known hosted API (:data:`KNOWN_HOSTS`: Zhipu, Moonshot, DashScope ...) its own, a server on this
  machine gets :data:`NO_KEY`, and any other server is refused before a call: one provider's key
  is never sent to another. ``api_key_env`` (a variable's name) still works
  and says it is deprecated.
- **One message layout.** :func:`two_image_layout`: the source image's label, the source image,
  the target's label, the target image, then the prompt. :func:`two_image_content` renders it as
  Chat Completions content, :meth:`ecap.providers.gemini.Gemini.parts` as Gemini parts.
- **One answer type.** Both return :class:`ecap.remote.Reply`.

What is provider-neutral (limits, retries, the call log) stays in :mod:`ecap.remote` and
:mod:`ecap.calls`. The SDKs are imported only when a client is made (the ``api`` extra).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from ..errors import EcapError
from ..interfaces import PluginConfig, transport_field
from ..net import is_loopback
from ..remote import unset_if_empty

log = logging.getLogger("ecap.providers")

#: The key local OpenAI-compatible servers (vLLM, SGLang) accept when they check none.
NO_KEY = "EMPTY"
#: Hosted APIs whose key has a standard variable, by the host of their ``base_url``.
KNOWN_HOSTS = {
    "api.openai.com": "OPENAI_API_KEY",
    "generativelanguage.googleapis.com": "GEMINI_API_KEY",
    "open.bigmodel.cn": "ZHIPU_API_KEY",
    "api.z.ai": "ZAI_API_KEY",
    "api.moonshot.ai": "MOONSHOT_API_KEY",
    "api.moonshot.cn": "MOONSHOT_API_KEY",
    "dashscope.aliyuncs.com": "DASHSCOPE_API_KEY",
    "dashscope-intl.aliyuncs.com": "DASHSCOPE_API_KEY",
}
#: (label, image URL) of one image in :func:`two_image_content`; a label of ``None`` is left out.
LabelledImage = tuple[str | None, str]


class HostedEndpoint(PluginConfig):
    """Where a hosted model answers and with which key (see the module docstring)."""

    base_url: str | None = Field(
        None, description="the server's API root (default: the provider's own API)"
    )
    api_key: SecretStr | None = Field(
        None,
        description="the key, as ${env:VAR} (default: the provider's standard variable for its "
        f"own API; {NO_KEY} for a server that checks none)",
    )
    api_key_env: str | None = transport_field(
        None, description="deprecated: write api_key: ${env:VAR} instead"
    )

    @field_validator("api_key", "base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return unset_if_empty(value)

    @model_validator(mode="after")
    def _deprecated_key_variable(self) -> HostedEndpoint:
        if self.api_key_env:
            log.warning(
                "api_key_env is deprecated: write api_key: ${env:%s} instead", self.api_key_env
            )
        return self

    def key(self, standard: Sequence[str]) -> str | None:
        """The key to send: ``api_key``; else ``$api_key_env``; else, for the provider's own API,
        the first of its ``standard`` variables that is set, or for a known hosted API its
        variable; else :data:`NO_KEY` for a server on this machine; else ``None``."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        variables = [self.api_key_env] if self.api_key_env else []
        if self.base_url is None:
            variables.extend(standard)
        elif (host := urlparse(self.base_url).hostname) in KNOWN_HOSTS:
            variables.append(KNOWN_HOSTS[host])
        for variable in variables:
            if os.environ.get(variable):
                return os.environ[variable]
        return NO_KEY if is_loopback(self.base_url) else None

    def require_key(self, standard: Sequence[str]) -> str:
        """:meth:`key`, or an error before any call that says what to set."""
        found = self.key(standard)
        if found is not None:
            return found
        if self.api_key_env:
            where = f"${self.api_key_env} is not set"
        elif self.base_url is None:
            where = f"none of {', '.join('$' + v for v in standard)} is set"
        elif (host := urlparse(self.base_url).hostname) in KNOWN_HOSTS:
            where = f"${KNOWN_HOSTS[host]} is not set"
        else:
            where = f"{self.base_url} is not the provider's own API"
        raise EcapError(
            f"no API key: {where}; write api_key: ${{env:VAR}} (or api_key: {NO_KEY} for a "
            "server that checks none)"
        )


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def two_image_layout(labels: tuple[str | None, str | None], prompt: str) -> list[str | int]:
    """The one order every two-image call follows: the source's label, the source image, the
    target's label, the target image, the prompt. Texts are strings, images their index (0 the
    source, 1 the target); a label of ``None`` is left out. Each provider renders this list."""
    layout: list[str | int] = []
    for index, label in enumerate(labels):
        if label:
            layout.append(label)
        layout.append(index)
    layout.append(prompt)
    return layout


def two_image_content(
    source: LabelledImage, target: LabelledImage, prompt: str
) -> list[dict[str, Any]]:
    """:func:`two_image_layout` as an OpenAI-style user turn: (label, image URL) for the source,
    then for the target, then the prompt."""
    urls = (source[1], target[1])
    return [
        {"type": "text", "text": part}
        if isinstance(part, str)
        else {"type": "image_url", "image_url": {"url": urls[part]}}
        for part in two_image_layout((source[0], target[0]), prompt)
    ]


__all__ = [
    "KNOWN_HOSTS",
    "NO_KEY",
    "HostedEndpoint",
    "LabelledImage",
    "data_uri",
    "is_loopback",
    "two_image_content",
    "two_image_layout",
]
