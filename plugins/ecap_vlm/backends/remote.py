"""What every remote backend shares: the call log, rate limits, retries, one call per candidate.

- Each candidate is its own call, with its own key in the store's call log (provider, model and
  the request's content, images by hash, candidate index, and the backend's semantic options):
  ``n`` works on every server, whether or not it takes an ``n`` parameter, and a candidate that
  came back is never paid for again, even when its siblings failed or the run was killed.
- Candidate ``i`` samples with ``seed + i``, so candidates differ on servers that honour seeds.
- Before calling, the log is asked for the whole batch in one query; after each answer, the answer
  is written at once (its own transaction).
- Limits and retries are :class:`ecap.remote.RemoteCaller`'s: ``max_concurrent_calls``,
  ``requests_per_minute``, ``tokens_per_minute``, exponential backoff honouring Retry-After.
- A request whose call still fails (retries spent, or refused outright) fails its pair alone.
"""

from __future__ import annotations

import asyncio
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, SecretStr

from ecap.calls import CallLog, CallRecord, request_hash
from ecap.hashing import semantic_config
from ecap.interfaces import PluginContext, transport_field
from ecap.records import SampleError
from ecap.remote import RemoteCaller, RemotePolicy

from .base import BackendOptions, Generation, Outcome, VLMBackend, VLMRequest


class RemoteOptions(RemotePolicy, BackendOptions):
    base_url: str | None = transport_field(None, description="the server's API root")
    api_key: SecretStr | None = Field(None, description="default: the api_key_env variable")
    api_key_env: str | None = transport_field(
        None, description="environment variable to read the key from when api_key is unset"
    )
    input_price: float | None = transport_field(None, ge=0, description="USD per 1M input tokens")
    output_price: float | None = transport_field(None, ge=0, description="USD per 1M output tokens")

    def key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class RemoteBackend(VLMBackend):
    """A model behind an API. Subclasses implement :meth:`send` (one call, one answer)."""

    Options = RemoteOptions
    options: RemoteOptions

    def __init__(
        self, model: str, revision: str | None, options: BackendOptions, context: PluginContext
    ) -> None:
        super().__init__(model, revision, options, context)
        self._caller = RemoteCaller(self.options)

    @abstractmethod
    async def send(self, request: VLMRequest, candidate: int) -> Reply:
        """One call for candidate ``candidate``. Raise :class:`ecap.remote.Retryable` for a
        transient failure, anything else for a refusal."""

    def seed(self, request: VLMRequest, candidate: int) -> int | None:
        seed = request.sampling.seed
        return None if seed is None else seed + candidate

    def call_key(self, request: VLMRequest, candidate: int) -> str:
        identity = {
            **request.identity(),
            "candidate": candidate,
            "options": semantic_config(self.options),
        }
        return request_hash(self.name, self.identity().label(), identity)

    async def generate(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        keys = [[self.call_key(r, c) for c in range(r.n)] for r in requests]
        calls: CallLog | None = self.context.calls
        known = calls.lookup([k for ks in keys for k in ks]) if calls else {}
        return list(
            await asyncio.gather(
                *(self._request(r, ks, known) for r, ks in zip(requests, keys, strict=True))
            )
        )

    async def _request(
        self, request: VLMRequest, keys: list[str], known: dict[str, CallRecord]
    ) -> Outcome:
        replies = await asyncio.gather(
            *(self._candidate(request, c, key, known.get(key)) for c, key in enumerate(keys)),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                if not isinstance(reply, Exception):
                    raise reply
                return SampleError.from_exception(reply)
        answers = [r for r in replies if isinstance(r, Reply)]
        return Generation(
            texts=tuple(r.text for r in answers),
            tokens_in=sum(r.tokens_in for r in answers),
            tokens_out=sum(r.tokens_out for r in answers),
            keys=tuple(keys),
            meta=_merged_meta(answers),
        )

    async def _candidate(
        self, request: VLMRequest, candidate: int, key: str, cached: CallRecord | None
    ) -> Reply:
        if cached is not None and cached.status == "ok" and cached.response:
            response = cached.response
            return Reply(
                response["text"],
                cached.tokens_in or 0,
                cached.tokens_out or 0,
                {**response.get("meta", {}), "cached": True},
            )
        reply, latency = await self._caller.call(
            lambda: self.send(request, candidate),
            estimated_tokens=_estimate(request),
            tokens_of=lambda r: r.tokens_in + r.tokens_out,
        )
        calls: CallLog | None = self.context.calls
        if calls is not None:
            calls.record(
                key,
                provider=self.name,
                model=self.identity().label(),
                status="ok",
                response={"text": reply.text, "meta": reply.meta},
                tokens_in=reply.tokens_in,
                tokens_out=reply.tokens_out,
                cost=self.cost(reply),
                latency_ms=latency,
            )
        return reply

    def cost(self, reply: Reply) -> float:
        price_in = self.options.input_price or 0.0
        price_out = self.options.output_price or 0.0
        return (reply.tokens_in * price_in + reply.tokens_out * price_out) / 1e6

    def discard(self, generation: Generation, index: int, reason: str) -> None:
        calls: CallLog | None = self.context.calls
        if calls is not None and index < len(generation.keys):
            calls.mark_error(generation.keys[index], reason)


def _estimate(request: VLMRequest) -> int:
    """Rough tokens of one call, for the tokens-per-minute budget before the real count is
    known: 4 characters a token, about 800 tokens an image, and the longest answer."""
    text = len(request.prompt) + len(request.system or "")
    return text // 4 + 1600 + request.sampling.max_new_tokens


def _merged_meta(replies: Sequence[Reply]) -> dict[str, Any]:
    """One meta for the request: per-candidate values become lists when they differ."""
    merged: dict[str, Any] = {}
    for name in {k for r in replies for k in r.meta}:
        values = [r.meta.get(name) for r in replies]
        merged[name] = values[0] if all(v == values[0] for v in values) else values
    return merged


__all__ = ["RemoteBackend", "RemoteOptions", "Reply"]
