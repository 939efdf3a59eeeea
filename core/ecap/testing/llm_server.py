"""A local fake LLM server that speaks the real Gemini and OpenAI REST protocols.

Point the real ``google-genai`` and ``openai`` SDKs (sync or async) at it and they work unmodified::

    from ecap.testing.llm_server import FakeLLMServer

    with FakeLLMServer(responder=lambda req: '{"score": 4}', latency=0.0) as server:
        gemini = genai.Client(api_key="fake", http_options={"base_url": server.url})
        openai = OpenAI(api_key="sk-fake", base_url=server.openai_base_url)  # server.url + "/v1"
        server.inject(429, retry_after=1.5)      # the next model call gets a 429 with Retry-After
        ...
        server.count(provider="openai")          # model calls that reached the responder

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

Batch jobs advance on status reads: the first ``batch_polls`` reads report an unfinished state
(Gemini ``BATCH_STATE_PENDING`` then ``BATCH_STATE_RUNNING``; OpenAI ``in_progress`` after
``validating`` at creation), the next read runs every line through the responder and reports
success. ``batch_seconds`` additionally holds completion until that long after creation.
OpenAI output lines are shuffled (seeded by ``seed``); Gemini output lines keep input order.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.parser
import email.policy
import hashlib
import json
import math
import random
import re
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "FAULTS",
    "FakeLLMServer",
    "Fault",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "RecordedRequest",
    "default_responder",
    "example_for_schema",
]

Provider = Literal["gemini", "openai"]
FAULTS = ("slow", "truncated", "malformed", "disconnect")
DEFAULT_TEXT = "This is a fake answer from ecap's FakeLLMServer."
IMAGE_TOKENS = 258  # what Gemini bills per image; used for the default token estimate

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# google.rpc.Code numbers, used where Google nests a Status (batch line errors).
_RPC_CODE = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "ABORTED": 10,
    "NOT_IMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
    "CANCELLED": 1,
}
_OPENAI_ERROR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    429: ("requests", "rate_limit_exceeded"),
}
_DEFAULT_MESSAGE = {
    400: "Request contains an invalid argument.",
    401: "Incorrect API key provided.",
    404: "The requested resource was not found.",
    429: "Rate limit reached. Please try again later.",
    500: "An internal error has occurred. Please retry.",
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline exceeded.",
}
_OPENAI_BATCH_ENDPOINTS = ("/v1/chat/completions",)


# --------------------------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class LLMRequest:
    """One model call as the responder sees it, normalised across providers.

    ``texts`` holds the text parts of every non-system message in order (user and assistant turns);
    ``images`` the inline images' bytes in order (Gemini ``inlineData``, OpenAI ``data:`` URIs),
    with ``image_mime_types`` alongside; ``image_urls`` the images given by reference (Gemini
    ``fileData`` URIs, OpenAI http(s) URLs). ``schema`` is the response schema exactly as sent
    (JSON Schema, or Gemini's OpenAPI-style schema with upper-case types); ``json_mode`` is true
    when JSON output was requested with or without a schema. ``kind`` is ``"generate"`` for an
    online call and ``"batch"`` for a batch line, whose ``key`` is the line's key / ``custom_id``.
    """

    provider: Provider
    model: str
    texts: tuple[str, ...]
    images: tuple[bytes, ...]
    image_mime_types: tuple[str, ...]
    image_urls: tuple[str, ...]
    system: str | None
    schema: dict[str, Any] | None
    json_mode: bool
    body: dict[str, Any]
    kind: Literal["generate", "batch"] = "generate"
    key: str | None = None
    stream: bool = False

    @property
    def text(self) -> str:
        """All text parts joined by newlines."""
        return "\n".join(self.texts)


@dataclass
class LLMReply:
    """A richer responder answer. Token counts left as None are estimated (4 characters a token,
    258 tokens an image). ``finish_reason`` uses OpenAI's words (stop, length, content_filter) and
    is mapped to Gemini's (STOP, MAX_TOKENS, SAFETY)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int = 0
    finish_reason: str = "stop"
    model_version: str | None = None


class LLMError(Exception):
    """Raise from a responder to answer that call with an API error (status code and message).

    Online calls get the provider's error body (and ``Retry-After`` when given); batch lines become
    failed lines (OpenAI error file; Gemini ``error`` entries)."""

    def __init__(
        self, status: int, message: str | None = None, *, retry_after: float | None = None
    ):
        self.status = status
        self.message = message or _DEFAULT_MESSAGE.get(status, f"Error {status}.")
        self.retry_after = retry_after
        super().__init__(f"{status}: {self.message}")


@dataclass(frozen=True)
class Fault:
    """A queued fault; see :meth:`FakeLLMServer.inject`."""

    kind: int | str
    retry_after: float | None = None
    seconds: float = 5.0
    text: str | None = None
    message: str | None = None
    provider: Provider | None = None

    @property
    def name(self) -> str:
        return str(self.kind)


@dataclass
class RecordedRequest:
    """One HTTP request as the server received it.

    ``kind`` is ``generate`` (online model call, streamed or not), ``count_tokens``, ``upload``,
    ``files``, ``batches``, ``models`` or ``unknown``. ``time`` is ``time.monotonic()`` at arrival;
    ``status`` is the HTTP status answered and ``fault`` the injected fault applied, if any."""

    provider: str
    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    time: float
    status: int | None = None
    fault: str | None = None


Responder = Callable[[LLMRequest], "str | dict[str, Any] | list[Any] | LLMReply"]


# --------------------------------------------------------------------------------------------
# Default responder and schema examples


def example_for_schema(schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> Any:
    """A simple value valid against ``schema`` (JSON Schema or Gemini's OpenAPI subset).

    Objects get every property, arrays ``max(minItems, 1)`` items, strings ``"fake"`` (padded to
    ``minLength``), numbers 0 or their minimum, booleans false, enums their first value. ``$ref``
    into ``$defs`` / ``definitions`` is followed; ``anyOf`` / ``oneOf`` take the first non-null
    branch."""
    return _example(schema or {}, root if root is not None else (schema or {}), 0)


def _example(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 32:
        return None
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if part else target
        return _example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "example" in schema:
        return schema["example"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key) or schema.get(_snake(key))
        if options:
            for option in options:
                if str(option.get("type", "")).lower() != "null":
                    return _example(option, root, depth + 1)
            return None
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for option in schema["allOf"]:
            merged.update(option)
        return _example(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [str(k).lower() for k in kind if str(k).lower() != "null"]
        kind = kinds[0] if kinds else "null"
    kind = str(kind).lower() if kind else ("object" if "properties" in schema else None)
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _example(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        prefix = schema.get("prefixItems") or []
        count = max(int(schema.get("minItems", schema.get("min_items", 1)) or 0), len(prefix), 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = [_example(sub, root, depth + 1) for sub in prefix]
        while len(items) < count:
            items.append(_example(schema.get("items") or {}, root, depth + 1))
        return items
    if kind in ("integer", "number"):
        value: float = 0
        if "minimum" in schema:
            value = max(value, float(schema["minimum"]))
        low = schema.get("exclusiveMinimum")
        if isinstance(low, int | float) and not isinstance(low, bool) and value <= low:
            value = math.floor(low) + 1 if kind == "integer" else low + 0.5
        if "maximum" in schema:
            value = min(value, float(schema["maximum"]))
        high = schema.get("exclusiveMaximum")
        if isinstance(high, int | float) and not isinstance(high, bool) and value >= high:
            value = math.ceil(high) - 1 if kind == "integer" else high - 0.5
        return math.ceil(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "string":
        fmt = schema.get("format")
        formats = {
            "date-time": "2026-01-01T00:00:00Z",
            "date": "2026-01-01",
            "time": "00:00:00",
            "email": "fake@example.com",
            "uri": "https://example.com/fake",
            "uuid": "00000000-0000-4000-8000-000000000000",
        }
        text = formats.get(str(fmt), "fake")
        low = int(schema.get("minLength", schema.get("min_length", 0)) or 0)
        text = text + "x" * max(0, low - len(text))
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text
    return None


def default_responder(request: LLMRequest) -> str:
    """A JSON instance of the response schema when one was sent; ``{"text": ...}`` in JSON mode
    without a schema; otherwise a fixed sentence."""
    if request.schema is not None:
        return json.dumps(example_for_schema(request.schema))
    if request.json_mode:
        return json.dumps({"text": DEFAULT_TEXT})
    return DEFAULT_TEXT


def chatty(text: str) -> str:
    """What the ``malformed`` fault turns an answer into: prose around a fenced block."""
    return f"Sure! Here is my answer:\n\n```json\n{text}\n```\n\nLet me know if you need more."


# --------------------------------------------------------------------------------------------
# Internals


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field in either casing (camelCase as the REST docs, snake_case as the SDK mixes)."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(_snake(name), default)


def _now_rfc3339(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(ts if ts is not None else time.time(), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id(length: int = 16) -> str:
    return uuid.uuid4().hex[:length]


def _b64decode(data: str) -> bytes:
    data = re.sub(r"\s+", "", data)
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except ValueError:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False
    fault: str | None = None


@dataclass
class _StoredFile:
    id: str
    provider: Provider
    filename: str
    mime_type: str
    data: bytes
    purpose: str
    created: float
    generated: bool = False


@dataclass
class _UploadSession:
    id: str
    ver: str
    display_name: str | None
    mime_type: str
    filename: str
    size: int | None
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class _Batch:
    id: str
    provider: Provider
    model: str
    created: float
    display_name: str | None = None
    # Each line: (key, request body); Gemini keeps inline metadata per line.
    lines: list[tuple[str | None, dict[str, Any], dict[str, Any] | None]] = field(
        default_factory=list
    )
    source: Literal["inline", "file"] = "inline"
    input_file_id: str | None = None
    reads: int = 0
    state: str = "pending"  # pending, running, succeeded, failed, cancelling, cancelled
    endpoint: str = ""
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    succeeded: int = 0
    failed: int = 0
    times: dict[str, float] = field(default_factory=dict)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False

    def __init__(self, owner: FakeLLMServer):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or go away mid-answer are part of the job; record anything else.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # includes ConnectionError and TimeoutError
            return
        self.owner.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 120  # an idle keep-alive connection is dropped after this
    # Headers and body leave in separate writes; with Nagle's algorithm on, the body would wait
    # for the client's delayed ACK (~40 ms on Linux) on every kept-alive connection.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    do_POST = do_GET
    do_DELETE = do_GET
    do_PUT = do_GET
    do_PATCH = do_GET

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.disconnect:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.disconnect:
            # Promise the whole body, send half of it, and drop the connection.
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(reply.body)


# Routes. A path prefix before the version is allowed (a base_url with a path, e.g. a proxy).
_VER = r"(?P<ver>v1(?:alpha|beta1?)?)"
_GEMINI_MODEL = re.compile(
    r"^(?P<prefix>.*?)/" + _VER + r"/(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/[^/]+/)?"
    r"models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens|"
    r"batchGenerateContent)$"
)
_GEMINI_UPLOAD = re.compile(r"^(?P<prefix>.*?)/upload/" + _VER + r"/files$")
_GEMINI_FILES = re.compile(r"^(?P<prefix>.*?)/" + _VER + r"/files$")
_GEMINI_FILE = re.compile(
    r"^(?P<prefix>.*?)/" + _VER + r"/files/(?P<id>[^/:]+)(?P<download>:download)?$"
)
_GEMINI_BATCHES = re.compile(r"^(?P<prefix>.*?)/" + _VER + r"/batches$")
_GEMINI_BATCH = re.compile(
    r"^(?P<prefix>.*?)/" + _VER + r"/batches/(?P<id>[^/:]+)(?P<cancel>:cancel)?$"
)
_GEMINI_MODELS = re.compile(r"^(?P<prefix>.*?)/" + _VER + r"/models(?:/(?P<model>[^/:]+))?$")
_OPENAI = re.compile(
    r"^(?P<prefix>.*?)/v1/(?P<resource>chat/completions|files|batches|models)"
    r"(?:/(?P<id>[^/]+))?(?:/(?P<action>content|cancel))?$"
)


class FakeLLMServer:
    """A fake Gemini + OpenAI server on ``127.0.0.1`` (see the module docstring).

    Args:
        responder: answers each model call (default :func:`default_responder`).
        latency: seconds every online model call waits before answering (concurrently).
        batch_polls: status reads that report a batch unfinished before it completes.
        batch_seconds: a batch also stays unfinished until this long after creation.
        api_key: when set, calls without this key (``x-goog-api-key`` / ``?key=`` /
            ``Authorization: Bearer``) are refused as the real services do (Gemini: 400
            ``API key not valid``; OpenAI: 401).
        seed: seeds the shuffling of OpenAI batch output lines.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        batch_polls: int = 1,
        batch_seconds: float = 0.0,
        api_key: str | None = None,
        seed: int = 0,
    ):
        self.responder: Responder = responder or default_responder
        self.latency = latency
        self.batch_polls = batch_polls
        self.batch_seconds = batch_seconds
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.calls: list[LLMRequest] = []
        self.errors: list[str] = []
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._local = threading.local()  # the request each handler thread is serving
        self._faults: list[Fault] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._fault_counts: dict[tuple[str, str], int] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._files: dict[str, _StoredFile] = {}
        self._uploads: dict[str, _UploadSession] = {}
        self._batches: dict[str, _Batch] = {}
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread (idempotent)."""
        if self._httpd is None:
            self._closing.clear()
            self._httpd = _HTTPServer(self)
            self._port = int(self._httpd.server_address[1])
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FakeLLMServer:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: wake sleeping handlers, drop open connections, free the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._closing.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound port (still readable after :meth:`close`)."""
        if self._port is None:
            raise RuntimeError("FakeLLMServer was never started; use start() or a with block")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the Gemini ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"``: the OpenAI ``base_url``."""
        return self.url + "/v1"

    def env(self, api_key: str = "fake-key") -> dict[str, str]:
        """Environment variables that point both SDKs here (for code that builds its own client)."""
        return {
            "GOOGLE_GEMINI_BASE_URL": self.url,
            "GEMINI_API_KEY": api_key,
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": api_key,
        }

    # ---- faults and inspection ---------------------------------------------------------------

    def inject(
        self,
        fault: int | str,
        *,
        retry_after: float | None = None,
        seconds: float = 5.0,
        text: str | None = None,
        message: str | None = None,
        times: int = 1,
        provider: Provider | None = None,
    ) -> None:
        """Queue a fault for the next online model call(s), consumed one per call in order.

        ``fault`` is an HTTP status (e.g. 429, 500, 502, 503, 400: an error body in the provider's
        shape; ``retry_after`` adds ``Retry-After`` (and ``retry-after-ms`` and Google's
        ``RetryInfo``)), or one of ``"slow"`` (wait ``seconds``, then answer normally),
        ``"truncated"`` (200 whose JSON body is cut in the middle), ``"malformed"`` (200 whose
        answer text is ``text`` or the real answer wrapped in prose and a code fence), or
        ``"disconnect"`` (promise a body, send half, close the connection). ``provider`` restricts
        the fault to one provider's calls; ``times`` queues it repeatedly."""
        if isinstance(fault, bool) or not (
            (isinstance(fault, int) and 400 <= fault <= 599) or fault in FAULTS
        ):
            raise ValueError(
                f"unknown fault {fault!r}: use an HTTP status 400-599 or one of {FAULTS}"
            )
        if provider not in (None, "gemini", "openai"):
            raise ValueError(f"unknown provider {provider!r}")
        item = Fault(fault, retry_after, seconds, text, message, provider)
        with self._lock:
            self._faults.extend([item] * times)

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def count(self, provider: Provider | None = None, kind: str = "generate") -> int:
        """Model calls that reached the responder (``kind`` ``generate`` or ``batch``). Calls
        answered by an injected error status never reach it; ``slow``, ``truncated``,
        ``malformed`` and ``disconnect`` calls do (the answer is needed to build the body)."""
        with self._lock:
            return sum(
                n for (p, k), n in self._counts.items() if provider in (None, p) and kind in (k,)
            )

    def fault_count(self, provider: Provider | None = None, fault: int | str | None = None) -> int:
        """Model calls that took an injected fault (of one kind, or any)."""
        with self._lock:
            return sum(
                n
                for (p, f), n in self._fault_counts.items()
                if provider in (None, p) and (fault is None or str(fault) == f)
            )

    def recorded(
        self, provider: str | None = None, kind: str | None = None
    ) -> list[RecordedRequest]:
        """The recorded requests, filtered by provider and kind."""
        with self._lock:
            return [
                r
                for r in self.requests
                if provider in (None, r.provider) and kind in (None, r.kind)
            ]

    @property
    def max_concurrency(self) -> int:
        """The most online model calls that were in flight at once."""
        with self._lock:
            return self._max_in_flight

    def complete_batches(self) -> None:
        """Finish every unfinished batch now (runs their lines through the responder)."""
        with self._lock:
            batches = [b for b in self._batches.values() if b.state in ("pending", "running")]
        for batch in batches:
            self._finish_batch(batch)

    def reset(self) -> None:
        """Forget requests, calls, counters, faults, files, batches and errors; keep the port,
        responder and settings."""
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self.errors.clear()
            self._faults.clear()
            self._counts.clear()
            self._fault_counts.clear()
            self._max_in_flight = 0
            self._files.clear()
            self._uploads.clear()
            self._batches.clear()

    # ---- request handling --------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        raw = handler.read_body()
        split = urllib.parse.urlsplit(handler.path)
        path = urllib.parse.unquote(split.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body: Any = None
        if raw and "json" in headers.get("content-type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        provider, kind = self._classify(handler.command, path, headers, query)
        record = RecordedRequest(
            provider, kind, handler.command, path, query, headers, body, raw, arrived
        )
        with self._lock:
            self.requests.append(record)
        self._local.record = record
        try:
            reply = self._route(handler.command, path, query, headers, body, raw, provider)
        except _BadRequest as error:
            reply = self._error(provider, error.status, error.message)
        except Exception:
            self.errors.append(traceback.format_exc())
            reply = self._error(provider, 500, "FakeLLMServer failed:\n" + traceback.format_exc())
        record.status = reply.status
        record.fault = record.fault or reply.fault
        handler.send(reply)

    @staticmethod
    def _looks_google(headers: dict[str, str], query: dict[str, str]) -> bool:
        return (
            "x-goog-api-key" in headers
            or "x-goog-api-client" in headers
            or "x-goog-upload-protocol" in headers
            or "x-goog-upload-command" in headers
            or "key" in query
            or "upload_id" in query
        )

    def _classify(
        self, method: str, path: str, headers: dict[str, str], query: dict[str, str]
    ) -> tuple[str, str]:
        google = self._looks_google(headers, query)
        if match := _GEMINI_MODEL.match(path):
            kinds = {"countTokens": "count_tokens", "batchGenerateContent": "batches"}
            return "gemini", kinds.get(match["method"], "generate")
        if _GEMINI_UPLOAD.match(path):
            return "gemini", "upload"
        match = _OPENAI.match(path)
        if match and not google:
            resource = match["resource"]
            kind = {"chat/completions": "generate"}.get(resource, resource)
            return "openai", kind
        if _GEMINI_FILES.match(path) or _GEMINI_FILE.match(path):
            return "gemini", "files"
        if _GEMINI_BATCHES.match(path) or _GEMINI_BATCH.match(path):
            return "gemini", "batches"
        if _GEMINI_MODELS.match(path):
            return "gemini", "models"
        return ("gemini" if google else "openai" if "/v1/" in path else "unknown"), "unknown"

    def _authorized(self, provider: str, headers: dict[str, str], query: dict[str, str]) -> bool:
        if self.api_key is None:
            return True
        if provider == "gemini":
            given = headers.get("x-goog-api-key") or query.get("key")
            bearer = headers.get("authorization", "")
            return given == self.api_key or bearer == f"Bearer {self.api_key}"
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        raw: bytes,
        provider: str,
    ) -> _Reply:
        if not self._authorized(provider, headers, query):
            if provider == "gemini":
                return self._error(provider, 400, "API key not valid. Please pass a valid API key.")
            return self._error(provider, 401, None)
        if provider == "gemini":
            return self._route_gemini(method, path, query, headers, body, raw)
        if provider == "openai":
            return self._route_openai(method, path, query, headers, body, raw)
        return self._error("openai", 404, f"No route for {method} {path}")

    def _error(
        self,
        provider: str,
        status: int,
        message: str | None,
        retry_after: float | None = None,
        fault: str | None = None,
    ) -> _Reply:
        message = message or _DEFAULT_MESSAGE.get(status, f"Error {status}.")
        headers: dict[str, str] = {}
        if provider == "gemini":
            error: dict[str, Any] = {
                "code": status,
                "message": message,
                "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
            }
            if retry_after is not None:
                error["details"] = [
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{retry_after:g}s",
                    }
                ]
            payload: dict[str, Any] = {"error": error}
        else:
            kind, code = _OPENAI_ERROR.get(status, ("server_error", None))
            payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            headers["x-request-id"] = "req_" + _new_id(24)
        if retry_after is not None:
            headers["retry-after"] = str(max(0, math.ceil(retry_after)))
            headers["retry-after-ms"] = str(max(0, round(retry_after * 1000)))
        return _Reply(status, json.dumps(payload).encode(), headers=headers, fault=fault)

    def _json(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> _Reply:
        return _Reply(status, json.dumps(payload).encode(), headers=headers or {})

    # ---- model calls (shared) ----------------------------------------------------------------

    def _take_fault(self, provider: Provider) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.provider in (None, provider):
                    del self._faults[index]
                    key = (provider, fault.name)
                    self._fault_counts[key] = self._fault_counts.get(key, 0) + 1
                    record = getattr(self._local, "record", None)
                    if record is not None:
                        record.fault = fault.name  # visible while a slow call still sleeps
                    return fault
        return None

    def _respond(self, request: LLMRequest) -> LLMReply:
        with self._lock:
            key = (request.provider, request.kind)
            self._counts[key] = self._counts.get(key, 0) + 1
            self.calls.append(request)
        answer = self.responder(request)
        if isinstance(answer, LLMReply):
            reply = copy.copy(answer)
        elif isinstance(answer, str):
            reply = LLMReply(answer)
        elif isinstance(answer, dict | list):
            reply = LLMReply(json.dumps(answer))
        else:
            raise TypeError(f"responder returned {type(answer).__name__}; expected str or LLMReply")
        if reply.prompt_tokens is None:
            prompt = "\n".join([request.system or "", *request.texts])
            reply.prompt_tokens = _estimate_tokens(prompt) + IMAGE_TOKENS * len(request.images)
        if reply.completion_tokens is None:
            reply.completion_tokens = _estimate_tokens(reply.text)
        return reply

    def _model_call(
        self,
        request: LLMRequest,
        render: Callable[[LLMReply], _Reply],
    ) -> _Reply:
        """Apply the next fault and the latency around one online model call."""
        fault = self._take_fault(request.provider)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if fault is not None and isinstance(fault.kind, int):
                self._closing.wait(self.latency)
                return self._error(
                    request.provider, fault.kind, fault.message, fault.retry_after, fault.name
                )
            try:
                reply = self._respond(request)
            except LLMError as error:
                self._closing.wait(self.latency)
                return self._error(request.provider, error.status, error.message, error.retry_after)
            if fault is not None and fault.kind == "malformed":
                reply.text = fault.text if fault.text is not None else chatty(reply.text)
            delay = self.latency + (
                fault.seconds if fault is not None and fault.kind == "slow" else 0
            )
            self._closing.wait(delay)
            out = render(reply)
            if fault is not None:
                out.fault = fault.name
                if fault.kind == "truncated":
                    out.body = out.body[: max(1, len(out.body) // 2)]
                elif fault.kind == "disconnect":
                    out.disconnect = True
            return out
        finally:
            with self._lock:
                self._in_flight -= 1

    # ---- Gemini ------------------------------------------------------------------------------

    def _gemini_request(
        self,
        model: str,
        body: Any,
        *,
        kind: Literal["generate", "batch"] = "generate",
        key: str | None = None,
        stream: bool = False,
    ) -> LLMRequest:
        if not isinstance(body, dict):
            raise _BadRequest("Invalid JSON payload received.")
        contents = _get(body, "contents")
        if isinstance(contents, dict):
            contents = [contents]
        if not contents or not isinstance(contents, list):
            raise _BadRequest("* GenerateContentRequest.contents: contents is not specified")
        texts: list[str] = []
        images: list[bytes] = []
        mimes: list[str] = []
        urls: list[str] = []
        for content in contents:
            parts = _get(content, "parts")
            if not isinstance(parts, list) or not parts:
                raise _BadRequest(
                    "* GenerateContentRequest.contents: contents.parts must not be empty"
                )
            for part in parts:
                if not isinstance(part, dict):
                    raise _BadRequest("Invalid JSON payload received: a part must be an object.")
                if _get(part, "text") is not None:
                    texts.append(str(_get(part, "text")))
                inline = _get(part, "inlineData")
                if inline is not None:
                    try:
                        images.append(_b64decode(str(_get(inline, "data", ""))))
                    except ValueError as error:
                        raise _BadRequest(f"Invalid value at 'inline_data.data': {error}") from None
                    mimes.append(str(_get(inline, "mimeType", "")))
                file_data = _get(part, "fileData")
                if file_data is not None:
                    urls.append(str(_get(file_data, "fileUri", "")))
        system = _get(body, "systemInstruction")
        system_text: str | None = None
        if isinstance(system, str):
            system_text = system
        elif isinstance(system, dict):
            system_text = "\n".join(
                str(_get(p, "text")) for p in _get(system, "parts") or [] if _get(p, "text")
            )
        config = _get(body, "generationConfig") or {}
        schema = _get(config, "responseJsonSchema")
        if schema is None:
            schema = _get(config, "responseSchema")
        json_mode = schema is not None or _get(config, "responseMimeType") == "application/json"
        return LLMRequest(
            provider="gemini",
            model=model,
            texts=tuple(texts),
            images=tuple(images),
            image_mime_types=tuple(mimes),
            image_urls=tuple(urls),
            system=system_text,
            schema=schema,
            json_mode=json_mode,
            body=body,
            kind=kind,
            key=key,
            stream=stream,
        )

    @staticmethod
    def _gemini_response(
        reply: LLMReply, model: str, text: str | None = None, final: bool = True
    ) -> dict[str, Any]:
        finish = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}.get(
            reply.finish_reason, reply.finish_reason.upper()
        )
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": reply.text if text is None else text}], "role": "model"},
            "index": 0,
        }
        out: dict[str, Any] = {"candidates": [candidate]}
        if final:
            candidate["finishReason"] = finish
            prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
            usage = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion + reply.reasoning_tokens,
            }
            if reply.reasoning_tokens:
                usage["thoughtsTokenCount"] = reply.reasoning_tokens
            out["usageMetadata"] = usage
        out["modelVersion"] = reply.model_version or model
        out["responseId"] = _new_id(22)
        return out

    def _route_gemini(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        raw: bytes,
    ) -> _Reply:
        if match := _GEMINI_MODEL.match(path):
            if method != "POST":
                raise _BadRequest(f"Method {method} not allowed", 405)
            model, action = match["model"], match["method"]
            if action == "batchGenerateContent":
                return self._gemini_batch_create(model, body)
            if body is None:
                raise _BadRequest("Invalid JSON payload received.")
            if action == "countTokens":
                inner = _get(body, "generateContentRequest") or body
                request = self._gemini_request(model, inner)
                prompt = "\n".join([request.system or "", *request.texts])
                total = _estimate_tokens(prompt) + IMAGE_TOKENS * len(request.images)
                return self._json({"totalTokens": total})
            stream = action == "streamGenerateContent"
            request = self._gemini_request(model, body, stream=stream)

            def render(reply: LLMReply) -> _Reply:
                if not stream:
                    return self._json(self._gemini_response(reply, model))
                half = len(reply.text) // 2
                pieces = [reply.text[:half], reply.text[half:]] if half else [reply.text]
                events = [
                    self._gemini_response(reply, model, piece, final=i == len(pieces) - 1)
                    for i, piece in enumerate(pieces)
                ]
                if query.get("alt") != "sse":  # without alt=sse Google streams one JSON array
                    return self._json(events)
                data = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events)
                return _Reply(200, data.encode(), content_type="text/event-stream")

            return self._model_call(request, render)
        if match := _GEMINI_UPLOAD.match(path):
            return self._gemini_upload(match["ver"], path, query, headers, body, raw)
        if match := _GEMINI_FILES.match(path):
            with self._lock:
                files = [f for f in self._files.values() if f.provider == "gemini"]
            return self._json({"files": [self._gemini_file(f, match["ver"]) for f in files]})
        if match := _GEMINI_FILE.match(path):
            stored = self._files.get(match["id"])
            if stored is None or stored.provider != "gemini":
                raise _BadRequest(f"File files/{match['id']} does not exist.", 404)
            if match["download"]:
                return _Reply(200, stored.data, content_type="application/octet-stream")
            if method == "DELETE":
                with self._lock:
                    self._files.pop(stored.id, None)
                return self._json({})
            return self._json(self._gemini_file(stored, match["ver"]))
        if _GEMINI_BATCHES.match(path):
            with self._lock:
                batches = [b for b in self._batches.values() if b.provider == "gemini"]
            return self._json({"operations": [self._gemini_operation(b) for b in batches]})
        if match := _GEMINI_BATCH.match(path):
            batch = self._batches.get(match["id"])
            if batch is None or batch.provider != "gemini":
                raise _BadRequest(f"Batch batches/{match['id']} not found.", 404)
            if match["cancel"]:
                with self._lock:
                    if batch.state in ("pending", "running"):
                        batch.state = "cancelled"
                        batch.times["end"] = time.time()
                return self._json({})
            if method == "DELETE":
                with self._lock:
                    self._batches.pop(batch.id, None)
                return self._json({})
            self._advance(batch)
            return self._json(self._gemini_operation(batch))
        if match := _GEMINI_MODELS.match(path):
            name = match["model"] or "gemini-2.5-flash"
            model_info = {
                "name": f"models/{name}",
                "displayName": name,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            return self._json(model_info if match["model"] else {"models": [model_info]})
        raise _BadRequest(f"No route for {method} {path}", 404)

    def _gemini_file(self, stored: _StoredFile, ver: str) -> dict[str, Any]:
        uri = f"{self.url}/{ver}/files/{stored.id}"
        out = {
            "name": f"files/{stored.id}",
            "displayName": stored.filename,
            "mimeType": stored.mime_type,
            "sizeBytes": str(len(stored.data)),
            "createTime": _now_rfc3339(stored.created),
            "updateTime": _now_rfc3339(stored.created),
            "expirationTime": _now_rfc3339(stored.created + 48 * 3600),
            "sha256Hash": base64.b64encode(
                hashlib.sha256(stored.data).hexdigest().encode()
            ).decode(),
            "uri": uri,
            "state": "ACTIVE",
            "source": "GENERATED" if stored.generated else "UPLOADED",
        }
        if stored.generated:
            out["downloadUri"] = uri + ":download?alt=media"
        return out

    def _gemini_upload(
        self,
        ver: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        raw: bytes,
    ) -> _Reply:
        command = headers.get("x-goog-upload-command", "").lower()
        commands = {c.strip() for c in command.split(",") if c.strip()}
        if "start" in commands:
            info = _get(body, "file") or {}
            size_header = headers.get("x-goog-upload-header-content-length")
            session = _UploadSession(
                id=_new_id(24),
                ver=ver,
                display_name=_get(info, "displayName"),
                mime_type=headers.get("x-goog-upload-header-content-type")
                or _get(info, "mimeType")
                or "application/octet-stream",
                filename=headers.get("x-goog-upload-file-name") or "upload",
                size=int(size_header) if size_header else None,
            )
            with self._lock:
                self._uploads[session.id] = session
            upload_url = f"{self.url}{path}?upload_id={session.id}&upload_protocol=resumable"
            return _Reply(
                200,
                b"",
                headers={
                    "x-goog-upload-url": upload_url,
                    "x-goog-upload-status": "active",
                    "x-goog-upload-chunk-granularity": "8388608",
                },
            )
        session_id = query.get("upload_id", "")
        upload = self._uploads.get(session_id)
        if upload is None:
            raise _BadRequest("Upload session not found.", 404)
        if "upload" in commands:
            offset = int(headers.get("x-goog-upload-offset") or 0)
            if offset != len(upload.buffer):
                raise _BadRequest(
                    f"Invalid offset {offset}; {len(upload.buffer)} bytes received so far."
                )
            upload.buffer.extend(raw)
        if "finalize" not in commands:
            return _Reply(200, b"", headers={"x-goog-upload-status": "active"})
        if upload.size is not None and upload.size != len(upload.buffer):
            raise _BadRequest(f"Upload size {len(upload.buffer)} != declared {upload.size}.")
        stored = _StoredFile(
            id=_new_id(12),
            provider="gemini",
            filename=upload.display_name or upload.filename,
            mime_type=upload.mime_type,
            data=bytes(upload.buffer),
            purpose="upload",
            created=time.time(),
        )
        with self._lock:
            self._files[stored.id] = stored
            self._uploads.pop(upload.id, None)
        return self._json(
            {"file": self._gemini_file(stored, upload.ver)},
            headers={"x-goog-upload-status": "final"},
        )

    def _gemini_batch_create(self, model: str, body: Any) -> _Reply:
        batch_body = _get(body, "batch")
        if not isinstance(batch_body, dict):
            raise _BadRequest("* BatchGenerateContentRequest.batch: batch is not specified")
        input_config = _get(batch_body, "inputConfig") or {}
        batch = _Batch(
            id=_new_id(12),
            provider="gemini",
            model=model,
            created=time.time(),
            display_name=_get(batch_body, "displayName"),
        )
        file_name = _get(input_config, "fileName")
        requests = _get(_get(input_config, "requests") or {}, "requests")
        if file_name:
            file_id = str(file_name).removeprefix("files/")
            stored = self._files.get(file_id)
            if stored is None:
                raise _BadRequest(f"File {file_name} does not exist.", 404)
            batch.source, batch.input_file_id = "file", file_id
            for number, line in enumerate(stored.data.decode().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    item = {"key": f"line-{number}", "request": None}
                batch.lines.append((_get(item, "key"), _get(item, "request"), None))
        elif isinstance(requests, list) and requests:
            for item in requests:
                metadata = _get(item, "metadata")
                key = metadata.get("key") if isinstance(metadata, dict) else None
                batch.lines.append((key, _get(item, "request"), metadata))
        else:
            raise _BadRequest("* inputConfig: either fileName or requests must be given")
        with self._lock:
            self._batches[batch.id] = batch
        return self._json(self._gemini_operation(batch))

    def _gemini_operation(self, batch: _Batch) -> dict[str, Any]:
        states = {
            "pending": "BATCH_STATE_PENDING",
            "running": "BATCH_STATE_RUNNING",
            "finishing": "BATCH_STATE_RUNNING",
            "succeeded": "BATCH_STATE_SUCCEEDED",
            "failed": "BATCH_STATE_FAILED",
            "cancelled": "BATCH_STATE_CANCELLED",
        }
        done = batch.state in ("succeeded", "failed", "cancelled")
        total = len(batch.lines)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{batch.model}",
            "name": f"batches/{batch.id}",
            "displayName": batch.display_name or "",
            "createTime": _now_rfc3339(batch.created),
            "updateTime": _now_rfc3339(batch.times.get("end", batch.created)),
            "state": states[batch.state],
            "batchStats": {
                "requestCount": str(total),
                "successfulRequestCount": str(batch.succeeded),
                "failedRequestCount": str(batch.failed),
                "pendingRequestCount": str(total - batch.succeeded - batch.failed),
            },
        }
        if "end" in batch.times:
            metadata["endTime"] = _now_rfc3339(batch.times["end"])
        out: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": metadata}
        if batch.state == "succeeded":
            if batch.output_file_id is not None:
                output: dict[str, Any] = {"responsesFile": f"files/{batch.output_file_id}"}
            else:
                output = {"inlinedResponses": {"inlinedResponses": batch.results}}
            metadata["output"] = output
            out["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main."
                "GenerateContentBatchOutput",
                **output,
            }
        if done:
            out["done"] = True
        return out

    # ---- OpenAI ------------------------------------------------------------------------------

    def _openai_request(
        self,
        body: Any,
        *,
        kind: Literal["generate", "batch"] = "generate",
        key: str | None = None,
    ) -> LLMRequest:
        if not isinstance(body, dict):
            raise _BadRequest("We could not parse the JSON body of your request.")
        model, messages = body.get("model"), body.get("messages")
        if not model:
            raise _BadRequest("you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array")
        texts: list[str] = []
        system: list[str] = []
        images: list[bytes] = []
        mimes: list[str] = []
        urls: list[str] = []
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise _BadRequest("Each message must be an object with a 'role'.")
            target = system if message["role"] in ("system", "developer") else texts
            content = message.get("content")
            if isinstance(content, str):
                target.append(content)
                continue
            for part in content or []:
                kind_ = part.get("type") if isinstance(part, dict) else None
                if kind_ == "text":
                    target.append(str(part.get("text", "")))
                elif kind_ == "image_url":
                    url = str((part.get("image_url") or {}).get("url", ""))
                    if url.startswith("data:"):
                        header, _, data = url.partition(",")
                        mimes.append(header[5:].split(";")[0])
                        try:
                            if ";base64" in header:
                                images.append(_b64decode(data))
                            else:
                                images.append(urllib.parse.unquote_to_bytes(data))
                        except ValueError:
                            raise _BadRequest("Invalid base64 image data URI.") from None
                    else:
                        urls.append(url)
        schema: dict[str, Any] | None = None
        response_format = body.get("response_format") or {}
        json_mode = response_format.get("type") in ("json_object", "json_schema")
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
        structured = body.get("structured_outputs") or {}  # vLLM's extra_body
        if schema is None and isinstance(structured, dict) and structured.get("json"):
            schema, json_mode = structured["json"], True
        if schema is None and body.get("guided_json"):  # older vLLM
            schema, json_mode = body["guided_json"], True
        if isinstance(schema, str):
            schema = json.loads(schema)
        return LLMRequest(
            provider="openai",
            model=str(model),
            texts=tuple(texts),
            images=tuple(images),
            image_mime_types=tuple(mimes),
            image_urls=tuple(urls),
            system="\n".join(system) if system else None,
            schema=schema,
            json_mode=json_mode,
            body=body,
            kind=kind,
            key=key,
            stream=bool(body.get("stream")),
        )

    @staticmethod
    def _openai_completion(reply: LLMReply, model: str) -> dict[str, Any]:
        prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
        return {
            "id": "chatcmpl-" + _new_id(24),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion + reply.reasoning_tokens,
                "total_tokens": prompt + completion + reply.reasoning_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": reply.reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_ecapfake",
        }

    def _openai_stream(self, reply: LLMReply, model: str, body: dict[str, Any]) -> _Reply:
        base = {
            "id": "chatcmpl-" + _new_id(24),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ecapfake",
        }
        half = len(reply.text) // 2
        pieces = [reply.text[:half], reply.text[half:]] if half else [reply.text]
        chunks: list[dict[str, Any]] = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        ]
        for piece in pieces:
            chunks.append(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
        chunks.append(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]}
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._openai_completion(reply, model)["usage"]
            chunks.append({**base, "choices": [], "usage": usage})
        data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return _Reply(200, data.encode(), content_type="text/event-stream; charset=utf-8")

    def _route_openai(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        raw: bytes,
    ) -> _Reply:
        match = _OPENAI.match(path)
        if match is None:
            raise _BadRequest(f"Invalid URL ({method} {path})", 404)
        resource, item, action = match["resource"], match["id"], match["action"]
        request_id = {"x-request-id": "req_" + _new_id(24)}
        if resource == "chat/completions" and method == "POST" and not item:
            request = self._openai_request(body)

            def render(reply: LLMReply) -> _Reply:
                if request.stream:
                    out = self._openai_stream(reply, request.model, request.body)
                else:
                    out = self._json(self._openai_completion(reply, request.model))
                out.headers.update(request_id)
                out.headers["openai-processing-ms"] = str(round(self.latency * 1000))
                return out

            return self._model_call(request, render)
        if resource == "models":
            models = [{"id": "gpt-4.1-mini", "object": "model", "created": 0, "owned_by": "ecap"}]
            return self._json(models[0] if item else {"object": "list", "data": models})
        if resource == "files":
            return self._openai_files(method, item, action, headers, raw)
        if resource == "batches":
            return self._openai_batches(method, item, action, body, query)
        raise _BadRequest(f"Invalid URL ({method} {path})", 404)

    def _openai_file(self, stored: _StoredFile) -> dict[str, Any]:
        return {
            "id": stored.id,
            "object": "file",
            "bytes": len(stored.data),
            "created_at": int(stored.created),
            "filename": stored.filename,
            "purpose": stored.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }

    def _openai_files(
        self, method: str, item: str | None, action: str | None, headers: dict[str, str], raw: bytes
    ) -> _Reply:
        if item is None and method == "POST":
            fields = self._multipart(headers.get("content-type", ""), raw)
            upload = fields.get("file")
            purpose = fields.get("purpose")
            if upload is None or purpose is None:
                raise _BadRequest("Missing required parameter: 'file' and 'purpose' are required.")
            new = _StoredFile(
                id="file-" + _new_id(22),
                provider="openai",
                filename=upload[0] or "upload",
                mime_type="application/octet-stream",
                data=upload[1],
                purpose=purpose[1].decode(),
                created=time.time(),
            )
            with self._lock:
                self._files[new.id] = new
            return self._json(self._openai_file(new))
        if item is None:
            with self._lock:
                files = [
                    self._openai_file(f) for f in self._files.values() if f.provider == "openai"
                ]
            return self._json({"object": "list", "data": files, "has_more": False})
        found = self._files.get(item)
        if found is None or found.provider != "openai":
            raise _BadRequest(f"No such File object: {item}", 404)
        stored = found
        if action == "content":
            return _Reply(200, stored.data, content_type="application/octet-stream")
        if method == "DELETE":
            with self._lock:
                self._files.pop(item, None)
            return self._json({"id": item, "object": "file", "deleted": True})
        return self._json(self._openai_file(stored))

    @staticmethod
    def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
        if "multipart/form-data" not in content_type:
            raise _BadRequest("Expected a multipart/form-data body.")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if name:
                data = payload if isinstance(payload, bytes) else b""
                fields[str(name)] = (part.get_filename(), data)
        return fields

    def _openai_batches(
        self, method: str, item: str | None, action: str | None, body: Any, query: dict[str, str]
    ) -> _Reply:
        if item is None and method == "POST":
            if not isinstance(body, dict):
                raise _BadRequest("We could not parse the JSON body of your request.")
            endpoint = body.get("endpoint")
            if endpoint not in _OPENAI_BATCH_ENDPOINTS:
                raise _BadRequest(
                    f"Invalid endpoint {endpoint!r}; this fake supports {_OPENAI_BATCH_ENDPOINTS}."
                )
            stored = self._files.get(str(body.get("input_file_id")))
            if stored is None or stored.provider != "openai":
                raise _BadRequest(f"No such File object: {body.get('input_file_id')}", 404)
            if stored.purpose != "batch":
                raise _BadRequest("The input file must be uploaded with purpose 'batch'.")
            batch = _Batch(
                id="batch_" + _new_id(24),
                provider="openai",
                model="",
                created=time.time(),
                input_file_id=stored.id,
                source="file",
                endpoint=str(endpoint),
                completion_window=str(body.get("completion_window", "24h")),
                metadata=body.get("metadata"),
            )
            seen: set[str] = set()
            for number, line in enumerate(stored.data.decode().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    batch.validation_errors.append(
                        {"code": "invalid_json_line", "message": "Invalid JSON.", "line": number}
                    )
                    continue
                custom_id = entry.get("custom_id")
                problem = None
                if not isinstance(custom_id, str) or not custom_id:
                    problem = ("missing_custom_id", "Each line needs a custom_id.")
                elif custom_id in seen:
                    problem = ("duplicate_custom_id", f"Duplicate custom_id {custom_id!r}.")
                elif entry.get("url") != endpoint or entry.get("method", "POST") != "POST":
                    problem = ("invalid_url", f"The line's url must be {endpoint!r}.")
                if problem is not None:
                    batch.validation_errors.append(
                        {"code": problem[0], "message": problem[1], "line": number}
                    )
                    continue
                seen.add(custom_id)
                batch.model = batch.model or str((entry.get("body") or {}).get("model", ""))
                batch.lines.append((custom_id, entry.get("body"), None))
            with self._lock:
                self._batches[batch.id] = batch
            return self._json(self._openai_batch(batch))
        if item is None:
            with self._lock:
                data = [
                    self._openai_batch(b)
                    for b in reversed(self._batches.values())
                    if b.provider == "openai"
                ]
            return self._json(
                {
                    "object": "list",
                    "data": data,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                    "has_more": False,
                }
            )
        found_batch = self._batches.get(item)
        if found_batch is None or found_batch.provider != "openai":
            raise _BadRequest(f"No such Batch object: {item}", 404)
        batch = found_batch
        if action == "cancel":
            with self._lock:
                if batch.state in ("pending", "running"):
                    batch.state = "cancelling"
                    batch.times["cancelling"] = time.time()
            return self._json(self._openai_batch(batch))
        self._advance(batch)
        return self._json(self._openai_batch(batch))

    def _openai_batch(self, batch: _Batch) -> dict[str, Any]:
        states = {
            "pending": "validating",
            "running": "in_progress",
            "finishing": "finalizing",
            "succeeded": "completed",
            "failed": "failed",
            "cancelling": "cancelling",
            "cancelled": "cancelled",
        }
        times = {k: int(v) for k, v in batch.times.items()}
        errors = None
        if batch.state == "failed" and batch.validation_errors:
            errors = {
                "object": "list",
                "data": [{**e, "param": None} for e in batch.validation_errors],
            }
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model or None,
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": states[batch.state],
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "in_progress_at": times.get("running"),
            "expires_at": int(batch.created) + 24 * 3600,
            "finalizing_at": times.get("end") if batch.state == "succeeded" else None,
            "completed_at": times.get("end") if batch.state == "succeeded" else None,
            "failed_at": times.get("end") if batch.state == "failed" else None,
            "expired_at": None,
            "cancelling_at": times.get("cancelling"),
            "cancelled_at": times.get("end") if batch.state == "cancelled" else None,
            "request_counts": {
                "total": len(batch.lines),
                "completed": batch.succeeded,
                "failed": batch.failed,
            },
            "metadata": batch.metadata,
        }

    # ---- batch processing (both providers) -----------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        """One status read: move the batch along its states (see the module docstring)."""
        with self._lock:
            if batch.state == "cancelling":
                batch.state = "cancelled"
                batch.times["end"] = time.time()
                return
            if batch.state not in ("pending", "running"):
                return
            batch.reads += 1
            if batch.validation_errors:
                batch.state = "failed"
                batch.times["end"] = time.time()
                return
            ready = batch.reads > self.batch_polls and (
                time.time() - batch.created >= self.batch_seconds
            )
            if not ready:
                if batch.reads > 1 or batch.provider == "openai":
                    batch.state = "running"
                    batch.times.setdefault("running", time.time())
                return
        self._finish_batch(batch)

    def _run_line(
        self, batch: _Batch, key: str | None, body: Any
    ) -> tuple[LLMReply | None, LLMError | None, LLMRequest | None]:
        try:
            if batch.provider == "gemini":
                request = self._gemini_request(batch.model, body, kind="batch", key=key)
            else:
                request = self._openai_request(body, kind="batch", key=key)
        except _BadRequest as error:
            return None, LLMError(error.status, error.message), None
        try:
            return self._respond(request), None, request
        except LLMError as error:
            return None, error, request
        except Exception as error:
            self.errors.append(traceback.format_exc())
            return None, LLMError(500, f"responder failed: {error!r}"), request

    def _finish_batch(self, batch: _Batch) -> None:
        with self._lock:
            if batch.state not in ("pending", "running"):
                return
            batch.state = "finishing"
        results: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for key, body, metadata in batch.lines:
            reply, error, request = self._run_line(batch, key, body)
            if batch.provider == "gemini":
                entry: dict[str, Any] = {}
                if reply is not None:
                    entry["response"] = self._gemini_response(reply, batch.model)
                else:
                    assert error is not None
                    status = _GOOGLE_STATUS.get(error.status, "UNKNOWN")
                    entry["error"] = {"code": _RPC_CODE.get(status, 2), "message": error.message}
                if batch.source == "inline":
                    if metadata is not None:
                        entry["metadata"] = metadata
                elif key is not None:
                    entry = {"key": key, **entry}
                (results if reply is not None else failures).append(entry)
                batch.results.append(entry)  # Gemini keeps input order
            else:
                line: dict[str, Any] = {
                    "id": "batch_req_" + _new_id(24),
                    "custom_id": key,
                    "response": None,
                    "error": None,
                }
                request_id = "req_" + _new_id(24)
                if reply is not None:
                    model = request.model if request is not None else batch.model
                    line["response"] = {
                        "status_code": 200,
                        "request_id": request_id,
                        "body": self._openai_completion(reply, model),
                    }
                    results.append(line)
                else:
                    assert error is not None
                    kind, code = _OPENAI_ERROR.get(error.status, ("server_error", None))
                    line["response"] = {
                        "status_code": error.status,
                        "request_id": request_id,
                        "body": {
                            "error": {
                                "message": error.message,
                                "type": kind,
                                "param": None,
                                "code": code,
                            }
                        },
                    }
                    failures.append(line)
        now = time.time()
        with self._lock:
            batch.succeeded, batch.failed = len(results), len(failures)
            if batch.provider == "gemini":
                if batch.source == "file":
                    data = "".join(json.dumps(r) + "\n" for r in batch.results).encode()
                    output = _StoredFile(
                        id="batch" + batch.id,
                        provider="gemini",
                        filename=f"batch-{batch.id}-responses",
                        mime_type="application/jsonl",
                        data=data,
                        purpose="batch_output",
                        created=now,
                        generated=True,
                    )
                    self._files[output.id] = output
                    batch.output_file_id = output.id
            else:
                self._random.shuffle(results)
                self._random.shuffle(failures)
                for kind, lines in (("output", results), ("error", failures)):
                    if not lines:
                        continue
                    stored = _StoredFile(
                        id="file-" + _new_id(22),
                        provider="openai",
                        filename=f"{batch.id}_{kind}.jsonl",
                        mime_type="application/jsonl",
                        data="".join(json.dumps(r) + "\n" for r in lines).encode(),
                        purpose="batch_output",
                        created=now,
                    )
                    self._files[stored.id] = stored
                    if kind == "output":
                        batch.output_file_id = stored.id
                    else:
                        batch.error_file_id = stored.id
            batch.times.setdefault("running", now)
            batch.times["end"] = now
            batch.state = "succeeded"

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "stopped"
        return f"<FakeLLMServer {where} calls={len(self.calls)} faults={len(self._faults)}>"
