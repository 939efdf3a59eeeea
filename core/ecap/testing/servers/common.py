"""What every fake protocol shares: the public request and answer types, the default
responder, the HTTP plumbing, and :class:`ServerBase`, the state of one server and the
protocol-neutral handling of model calls and batch jobs."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
import random
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections import deque

    from .faults import Fault
    from .ratelimit import RateLimit
    from .server import FakeLLMServer

Provider = Literal["gemini", "openai"]

DEFAULT_TEXT = "This is a fake answer from ecap's FakeLLMServer."

IMAGE_TOKENS = 258  # what Gemini bills per image; used for the default token estimate

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


class ServerBase(ABC):
    """A fake server's state, and what its protocols share: answering a model call through the
    responder, and moving a batch job along its states. See :class:`FakeLLMServer`."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        batch_polls: int = 1,
        batch_seconds: float = 0.0,
        api_key: str | None = None,
        seed: int = 0,
        rate_limit: RateLimit | None = None,
    ):
        self.responder: Responder = responder or default_responder
        self.latency = latency
        self.batch_polls = batch_polls
        self.batch_seconds = batch_seconds
        self.api_key = api_key
        self.rate_limit = rate_limit
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
        self._windows: dict[str, deque[float]] = {}  # admission times, per provider
        self._refusals: dict[str, int] = {}  # 429s for the rate limit, per provider
        self._in_flight = 0
        self._max_in_flight = 0
        self._files: dict[str, _StoredFile] = {}
        self._uploads: dict[str, _UploadSession] = {}
        self._batches: dict[str, _Batch] = {}
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

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

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _json(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> _Reply:
        return _Reply(status, json.dumps(payload).encode(), headers=headers or {})

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

    @abstractmethod
    def _error(
        self,
        provider: str,
        status: int,
        message: str | None,
        retry_after: float | None = None,
        fault: str | None = None,
    ) -> _Reply:
        """An API error in ``provider``'s shape."""

    @abstractmethod
    def _finish_batch(self, batch: _Batch) -> None:
        """Run a batch job's lines through the responder and store its results."""
