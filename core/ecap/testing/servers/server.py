"""The fake server itself: both protocols on one port, its lifecycle, what a test inspects,
routing, error bodies, and finishing batch jobs."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import traceback
import urllib.parse
from typing import Any

from .common import (
    _DEFAULT_MESSAGE,
    LLMError,
    LLMReply,
    LLMRequest,
    Provider,
    RecordedRequest,
    _BadRequest,
    _Batch,
    _Handler,
    _HTTPServer,
    _new_id,
    _Reply,
    _StoredFile,
)
from .gemini import (
    _GEMINI_BATCH,
    _GEMINI_BATCHES,
    _GEMINI_FILE,
    _GEMINI_FILES,
    _GEMINI_MODEL,
    _GEMINI_MODELS,
    _GEMINI_UPLOAD,
    _GOOGLE_STATUS,
    _RPC_CODE,
    GeminiProtocol,
)
from .openai import _OPENAI, _OPENAI_ERROR, OpenAIProtocol


class FakeLLMServer(GeminiProtocol, OpenAIProtocol):
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
        rate_limit: a :class:`~ecap.testing.servers.RateLimit` (requests a minute over a sliding
            window) enforced on online model calls with the providers' real 429s and headers;
            :meth:`limit_requests` changes it on a running server, :meth:`rate_limited` counts
            the refusals.
    """

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

    def env(self, api_key: str = "fake-key") -> dict[str, str]:
        """Environment variables that point both SDKs here (for code that builds its own client)."""
        return {
            "GOOGLE_GEMINI_BASE_URL": self.url,
            "GEMINI_API_KEY": api_key,
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": api_key,
        }

    def count(self, provider: Provider | None = None, kind: str = "generate") -> int:
        """Model calls that reached the responder (``kind`` ``generate`` or ``batch``). Calls
        answered by an injected error status never reach it; ``slow``, ``truncated``,
        ``malformed`` and ``disconnect`` calls do (the answer is needed to build the body)."""
        with self._lock:
            return sum(
                n for (p, k), n in self._counts.items() if provider in (None, p) and kind in (k,)
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
        """Forget requests, calls, counters, faults, rate-limit windows, files, batches and errors;
        keep the port, responder and settings."""
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self.errors.clear()
            self._faults.clear()
            self._counts.clear()
            self._fault_counts.clear()
            self._windows.clear()
            self._refusals.clear()
            self._max_in_flight = 0
            self._files.clear()
            self._uploads.clear()
            self._batches.clear()

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
