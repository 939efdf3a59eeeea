"""OpenAI's Chat Completions, and every server that speaks it (vLLM, SGLang, Zhipu, Moonshot,
DashScope, gateways), through the ``openai`` SDK with its own retries off:
:class:`ecap.remote.RemoteCaller` retries, honouring Retry-After."""

from __future__ import annotations

from typing import Any, Literal

from ..interfaces import require
from ..remote import Pacer, Reply, Retryable, transient_failures
from . import HostedEndpoint
from .limits import header_signal, refused

#: Where the key of OpenAI's own API is read from when ``api_key`` is unset.
STANDARD_KEY = ("OPENAI_API_KEY",)
EXTRA = "api"

JsonMode = Literal["json_schema", "json_object", "none"]
#: Request options that make the SDK hand back the raw answer: its headers and then its body.
_RAW_RESPONSE = {"headers": {"X-Stainless-Raw-Response": "true"}}


def sdk(plugin: str) -> Any:
    """The ``openai`` module, or the error that names the extra to install."""
    return require("openai", EXTRA, plugin)


def make_client(
    endpoint: HostedEndpoint, *, timeout: float, plugin: str, sync: bool = False
) -> Any:
    """An SDK client for ``endpoint`` (async unless ``sync``), its own retries off."""
    openai = sdk(plugin)
    cls = openai.OpenAI if sync else openai.AsyncOpenAI
    return cls(
        api_key=endpoint.require_key(STANDARD_KEY),
        base_url=endpoint.base_url,
        max_retries=0,
        timeout=timeout,
    )


def response_format(schema: dict[str, Any] | None, mode: JsonMode) -> dict[str, Any]:
    """The body fields that ask for JSON: a strict schema, any JSON object, or nothing (servers
    differ in what they support)."""
    if schema is None or mode == "none":
        return {}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "strict": True, "schema": schema},
        }
    }


async def post_chat_completion(
    client: Any, body: dict[str, Any], plugin: str, pacer: Pacer | None = None
) -> Reply:
    """POST ``/chat/completions`` with the body exactly as built, and read the answer.

    The SDK's typed ``chat.completions.create`` re-validates every nested part of a body, which
    costs several milliseconds of CPU per call: more than everything else a call does here.
    With a ``pacer``, the rate-limit headers of the answer (or of its 429) are passed to it; a
    429 raises :class:`~ecap.remote.RateLimited` either way.
    """
    openai = sdk(plugin)
    with transient_failures(openai.APIStatusError, lambda exc: exc.status_code):
        try:
            raw = await client.post(
                "/chat/completions", body=body, cast_to=object, options=_RAW_RESPONSE
            )
        except openai.RateLimitError as exc:
            raise refused(header_signal(exc.response.headers, refused=True), exc, pacer) from exc
        if pacer is not None:
            pacer.observe(header_signal(raw.headers))
        response = raw.parse()  # a garbled body is transient, like a dropped connection
    if not isinstance(response, dict):  # a body that is not JSON comes back as text
        raise Retryable(f"the answer is not JSON: {str(response)[:80]!r}")
    return reply(response)


def reply(body: dict[str, Any]) -> Reply:
    """A Chat Completions answer. Reasoning returned apart (``reasoning_content`` from Zhipu and
    vLLM's reasoning parsers, ``reasoning`` elsewhere) is kept apart; a body without choices is
    transient (a gateway's half answer)."""
    choices = body.get("choices") or []
    if not choices:
        raise Retryable(f"the answer has no choices: {str(body)[:120]!r}")
    message = choices[0].get("message") or {}
    usage = body.get("usage") or {}
    return Reply(
        text=message.get("content") or "",
        tokens_in=usage.get("prompt_tokens") or 0,
        tokens_out=usage.get("completion_tokens") or 0,
        finish_reason=choices[0].get("finish_reason"),
        served_model=body.get("model"),
        reasoning=message.get("reasoning_content") or message.get("reasoning") or None,
    )


__all__ = [
    "STANDARD_KEY",
    "JsonMode",
    "make_client",
    "post_chat_completion",
    "reply",
    "response_format",
    "sdk",
]
