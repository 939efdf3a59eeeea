"""The Gemini REST protocol of the fake server: generateContent (also streamed), countTokens,
batches (inline or from an uploaded file), the resumable upload protocol and files."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any, Literal

from .common import (
    IMAGE_TOKENS,
    LLMReply,
    LLMRequest,
    _b64decode,
    _BadRequest,
    _Batch,
    _estimate_tokens,
    _get,
    _new_id,
    _now_rfc3339,
    _Reply,
    _StoredFile,
    _UploadSession,
)
from .faults import FaultInjection

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


class GeminiProtocol(FaultInjection):
    """Routes and bodies of the Gemini API."""

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
