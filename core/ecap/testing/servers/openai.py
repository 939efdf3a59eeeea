"""The OpenAI REST protocol of the fake server: chat/completions (also streamed), files,
batches and models."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
import urllib.parse
from typing import Any, Literal

from .common import (
    LLMReply,
    LLMRequest,
    _b64decode,
    _BadRequest,
    _Batch,
    _new_id,
    _Reply,
    _StoredFile,
)
from .faults import FaultInjection

_OPENAI_ERROR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    429: ("requests", "rate_limit_exceeded"),
}

_OPENAI_BATCH_ENDPOINTS = ("/v1/chat/completions",)

_OPENAI = re.compile(
    r"^(?P<prefix>.*?)/v1/(?P<resource>chat/completions|files|batches|models)"
    r"(?:/(?P<id>[^/]+))?(?:/(?P<action>content|cancel))?$"
)


class OpenAIProtocol(FaultInjection):
    """Routes and bodies of the OpenAI API."""

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
