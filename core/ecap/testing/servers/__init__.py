"""A local fake LLM server that speaks the real Gemini and OpenAI REST protocols.

Point the real ``google-genai`` and ``openai`` SDKs (sync or async) at it and they work unmodified::

    from ecap.testing.servers import FakeLLMServer

    with FakeLLMServer(responder=lambda req: '{"score": 4}', latency=0.0) as server:
        gemini = genai.Client(api_key="fake", http_options={"base_url": server.url})
        openai = OpenAI(api_key="sk-fake", base_url=server.openai_base_url)  # server.url + "/v1"
        server.inject(429, retry_after=1.5)      # the next model call gets a 429 with Retry-After
        server.limit_requests(RateLimit(120, window=5))  # at most 10 calls in any 5 s, then 429s
        ...
        server.count(provider="openai")          # model calls that reached the responder
        server.rate_limited(provider="openai")   # calls refused for the rate limit

What it serves (stdlib only; bound to 127.0.0.1 on a free port):

- Gemini (``/v1``, ``/v1beta``, ``/v1alpha``; also Vertex-style ``publishers/google/models`` paths):
  ``models/{m}:generateContent``, ``:streamGenerateContent?alt=sse``, ``:countTokens``,
  ``:batchGenerateContent`` (inline requests or an uploaded JSONL file), ``batches`` get / list /
  cancel / delete, the resumable upload protocol (``/upload/{ver}/files``), ``files`` get / list /
  delete and ``files/{id}:download?alt=media``. Part fields are accepted in both casings
  (``inlineData`` / ``inline_data``, ``mimeType`` / ``mime_type``), as the SDK mixes them.
- OpenAI (``/v1``): ``chat/completions`` (also ``stream=true``), ``files`` (multipart upload, get,
  list, delete, content), ``batches`` (create, retrieve, list, cancel), ``models``.

Model calls go to ``responder(request: LLMRequest) -> str | dict | list | LLMReply``. It may raise
:class:`LLMError` to answer that call (or that batch line) with an API error. The default responder
returns a JSON instance of the request's response schema (see :func:`example_for_schema`), or a
fixed text when there is none.

Faults queued with :meth:`FakeLLMServer.inject` are consumed one per online model call
(``generateContent`` / ``chat/completions``, streamed or not), in order; batch lines never take
faults (use a responder raising :class:`LLMError` to fail single batch lines).

A :class:`RateLimit` (``rate_limit=`` or :meth:`FakeLLMServer.limit_requests`) refuses online
model calls over N a minute with each provider's real 429 (OpenAI: ``x-ratelimit-*`` headers and
``retry-after``; Gemini: ``RESOURCE_EXHAUSTED`` with ``QuotaFailure`` and ``RetryInfo``); see
:mod:`.ratelimit` for the window's semantics.

Batch jobs advance on status reads: the first ``batch_polls`` reads report an unfinished state
(Gemini ``BATCH_STATE_PENDING`` then ``BATCH_STATE_RUNNING``; OpenAI ``in_progress`` after
``validating`` at creation), the next read runs every line through the responder and reports
success. ``batch_seconds`` additionally holds completion until that long after creation.
OpenAI output lines are shuffled (seeded by ``seed``); Gemini output lines keep input order.

The modules: :mod:`.common` (request and answer types, the default responder, HTTP plumbing),
:mod:`.faults` (injected faults), :mod:`.ratelimit` (requests a minute), :mod:`.gemini` and
:mod:`.openai` (one protocol each) and :mod:`.server` (:class:`FakeLLMServer`, both on one
port). Nothing here is imported by ``import ecap.testing``; the ``fake_llm_server`` fixture
imports it when a test asks for it.
"""

from .common import (
    LLMError,
    LLMReply,
    LLMRequest,
    RecordedRequest,
    default_responder,
    example_for_schema,
)
from .faults import FAULTS, Fault
from .ratelimit import RateLimit
from .server import FakeLLMServer

__all__ = [
    "FAULTS",
    "FakeLLMServer",
    "Fault",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "RateLimit",
    "RecordedRequest",
    "default_responder",
    "example_for_schema",
]
