"""What every remote backend shares: the call log, rate limits, retries, one call per candidate.

- Each candidate is its own call, with its own key in the store's call log (provider, model and
  the request's content, images by hash, candidate index, and the backend's semantic options):
  ``n`` works on every server, whether or not it takes an ``n`` parameter, and a candidate that
  came back is never paid for again, even when its siblings failed or the run was killed.
- Candidate ``i`` samples with ``seed + i``, so candidates differ on servers that honour seeds.
- Before calling, the log is asked for the whole batch in one query; each answer is written at
  once (its own transaction), by :meth:`ecap.remote.RemoteCaller.logged`, the judges' rule too.
- Limits and retries are :class:`ecap.remote.RemoteCaller`'s, the judges' loop too:
  ``max_concurrent_calls``, calls started at a smooth pace within ``requests_per_minute`` and
  ``tokens_per_minute`` and within what the server states or its 429s reveal (subclasses pass
  :attr:`RemoteBackend.pacer` to :mod:`ecap.providers`, which reads it from the answers),
  exponential backoff honouring Retry-After.
- A request whose call still fails (retries spent, or refused outright) fails its pair alone; a
  setup problem (no API key, a missing SDK) fails the step once, before any call.
- Clients, messages, answers and the key convention are :mod:`ecap.providers`', shared with the
  judges.
- ``base_url`` is semantic: another server may serve other weights under the same model name.
- SDK clients belong to the event loop that made them: a backend used from a second
  ``asyncio.run`` makes new ones instead of reusing connections of a closed loop.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from ecap.calls import CallLog, CallRecord, request_hash
from ecap.errors import EcapError
from ecap.hashing import semantic_config
from ecap.interfaces import PluginContext
from ecap.providers import HostedEndpoint
from ecap.records import SampleError
from ecap.remote import Pacer, RemoteCaller, RemotePolicy, Reply, estimate_tokens
from ecap.vlm import BackendOptions, Generation, Outcome, VLMBackend, VLMRequest


class RemoteOptions(RemotePolicy, BackendOptions, HostedEndpoint):
    """Limits and prices (:class:`ecap.remote.RemotePolicy`) and where the model answers with
    which key (:class:`ecap.providers.HostedEndpoint`, the judges' convention too)."""


class RemoteBackend(VLMBackend):
    """A model behind an API. Subclasses implement :meth:`send` (one call, one answer) and
    :meth:`make_client` (their SDK client for the running event loop)."""

    Options = RemoteOptions
    options: RemoteOptions
    #: The provider's standard key variables (see :meth:`ecap.providers.HostedEndpoint.key`).
    standard_key: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, model: str, revision: str | None, options: BackendOptions, context: PluginContext
    ) -> None:
        super().__init__(model, revision, options, context)
        self._caller = RemoteCaller(self.options)
        #: Paces the calls within the server's rate limits; :meth:`send` hands it to the provider
        #: client, which tells it what the answers and 429s say about them.
        self.pacer: Pacer = self._caller.pacer
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @abstractmethod
    def make_client(self) -> Any:
        """A new SDK client (imported with :func:`ecap.interfaces.require`)."""

    @abstractmethod
    async def send(self, request: VLMRequest, candidate: int) -> Reply:
        """One call for candidate ``candidate``. Raise :class:`ecap.remote.Retryable` for a
        transient failure, anything else for a refusal. ``finish_reason`` is
        :data:`~ecap.vlm.TRUNCATED` when the answer hit ``max_new_tokens``."""

    def client(self) -> Any:
        """The SDK client of the running event loop, made on first use in each loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self.make_client()
            self._client_loop = loop
        return self._client

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
        self.options.require_key(self.standard_key)
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
            if isinstance(reply, EcapError) or not isinstance(reply, Exception | Reply):
                raise reply  # a setup problem fails the step; cancellation propagates
            if isinstance(reply, Exception):
                return SampleError.from_exception(reply)
        answers = [r for r in replies if isinstance(r, Reply)]
        served = {r.served_model for r in answers if r.served_model}
        return Generation(
            texts=tuple(r.text for r in answers),
            tokens_in=sum(r.tokens_in for r in answers),
            tokens_out=sum(r.tokens_out for r in answers),
            keys=tuple(keys),
            meta={"served_model": served.pop()} if len(served) == 1 else {},
            finish_reasons=tuple(r.finish_reason for r in answers),
            candidate_tokens=tuple((r.tokens_in, r.tokens_out) for r in answers),
            deterministic=request.sampling.greedy,
        )

    async def _candidate(
        self, request: VLMRequest, candidate: int, key: str, recorded: CallRecord | None
    ) -> Reply:
        text_chars = len(request.prompt) + len(request.system or "")
        reply, _ = await self._caller.logged(
            self.context.calls,
            key,
            recorded,
            provider=self.name,
            model=self.identity().label(),
            send=lambda: self.send(request, candidate),
            estimated_tokens=estimate_tokens(text_chars, 2, request.sampling.max_new_tokens),
            accept=lambda answer: answer,
        )
        return reply

    def discard(self, generation: Generation, index: int, reason: str) -> None:
        """Strike an unusable answer from the log, so the next run asks again; but an answer to a
        greedy request would come back the same, so it is kept as ``rejected`` and served again:
        the pair fails again from the log without a new paid call."""
        calls: CallLog | None = self.context.calls
        if calls is not None and index < len(generation.keys):
            calls.mark_error(generation.keys[index], reason, keep=generation.deterministic)

    def close(self) -> None:
        """Drop the client. Its connections belong to a loop that has ended by now, so they
        cannot be closed from here; each loop's client is discarded with it."""
        self._client = self._client_loop = None


__all__ = ["RemoteBackend", "RemoteOptions"]
