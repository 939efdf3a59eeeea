"""ecap.testing.servers: the real google-genai and openai SDKs, unmodified, against the fake.

Every SDK test skips cleanly when its SDK is missing (``pip install 'editcaption[judges]'``).
Timing checks use the server's own arrival timestamps, and only lower bounds that the client is
obliged to respect (a Retry-After wait), never an upper bound on wall-clock time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ecap.testing.servers import (
    FakeLLMServer,
    LLMError,
    LLMReply,
    LLMRequest,
    default_responder,
    example_for_schema,
)

SOURCE = b"\x89PNG\r\n\x1a\n" + b"source-image" * 8
TARGET = b"\x89PNG\r\n\x1a\n" + b"target-image" * 8
GEMINI = "gemini-2.5-flash"
GPT = "gpt-4.1-mini"


class Verdict(BaseModel):
    score: int
    verdict: str
    reason: str


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "verdict": {"type": "string", "enum": ["follows", "violates"]},
        "reason": {"type": "string"},
    },
    "required": ["score", "verdict", "reason"],
    "additionalProperties": False,
}


@pytest.fixture
def genai() -> Any:
    return pytest.importorskip("google.genai")


@pytest.fixture
def openai() -> Any:
    return pytest.importorskip("openai")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake
        assert fake.errors == [], "the fake server hit an internal error"


def gemini_client(genai: Any, server: FakeLLMServer, **http_options: Any) -> Any:
    return genai.Client(
        api_key="fake-key",
        http_options=genai.types.HttpOptions(base_url=server.url, **http_options),
    )


def openai_client(openai: Any, server: FakeLLMServer, **options: Any) -> Any:
    return openai.OpenAI(api_key="sk-fake", base_url=server.openai_base_url, **options)


def gemini_parts(genai: Any, text: str) -> list[Any]:
    part = genai.types.Part.from_bytes
    return [
        part(data=SOURCE, mime_type="image/png"),
        part(data=TARGET, mime_type="image/png"),
        text,
    ]


def openai_messages(text: str) -> list[dict[str, Any]]:
    def uri(data: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(data).decode()

    return [
        {"role": "system", "content": "You judge image edits."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Source image:"},
                {"type": "image_url", "image_url": {"url": uri(SOURCE), "detail": "high"}},
                {"type": "text", "text": "Edited image:"},
                {"type": "image_url", "image_url": {"url": uri(TARGET)}},
                {"type": "text", "text": text},
            ],
        },
    ]


JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
}


def gaps(server: FakeLLMServer, provider: str) -> list[float]:
    times = [r.time for r in server.recorded(provider, "generate")]
    return [b - a for a, b in itertools.pairwise(times)]


# --------------------------------------------------------------------------------------------
# The default responder and the server's own API (no SDK needed)


def test_default_responder_fills_json_and_openapi_schemas() -> None:
    class Inner(BaseModel):
        name: str
        tags: list[str]

    class Outer(BaseModel):
        score: int
        ratio: float
        kind: str = "x"
        inner: Inner
        maybe: Inner | None
        flags: list[bool]

    assert Outer.model_validate(example_for_schema(Outer.model_json_schema()))
    assert example_for_schema(VERDICT_SCHEMA) == {
        "score": 1,
        "verdict": "follows",
        "reason": "fake",
    }
    openapi = {
        "type": "OBJECT",
        "properties": {"n": {"type": "INTEGER"}, "ok": {"type": "BOOLEAN"}},
        "property_ordering": ["n", "ok"],
    }
    assert example_for_schema(openapi) == {"n": 0, "ok": False}
    plain = LLMRequest("openai", "m", ("hi",), (), (), (), None, None, False, {})
    assert not default_responder(plain).startswith("{")


def test_inject_validation_reset_env_and_close() -> None:
    server = FakeLLMServer().start()
    host, port = server._httpd.server_address[:2]  # type: ignore[union-attr]
    assert host == "127.0.0.1" and server.url == f"http://127.0.0.1:{port}"
    assert server.env()["OPENAI_BASE_URL"] == server.url + "/v1"
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject("explode")
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject(200)
    server.inject(503, times=2, provider="gemini")
    server.inject("slow", seconds=1)
    assert [f.kind for f in server.pending_faults] == [503, 503, "slow"]
    server.reset()
    assert server.pending_faults == [] and server.requests == [] and server.count() == 0
    server.close()
    server.close()  # idempotent
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------------------------
# Online calls: two images, a schema, usage tokens, sync and async


def test_gemini_generate_sync_and_async(genai: Any, server: FakeLLMServer) -> None:
    types = genai.types

    def responder(request: LLMRequest) -> LLMReply:
        answer = {"score": len(request.images), "verdict": "follows", "reason": request.texts[-1]}
        return LLMReply(json.dumps(answer), prompt_tokens=530, completion_tokens=20)

    server.responder = responder
    client = gemini_client(genai, server)
    config = types.GenerateContentConfig(
        system_instruction="You judge image edits.",
        temperature=0.0,
        response_mime_type="application/json",
        response_schema=Verdict,
    )
    result = client.models.generate_content(
        model=GEMINI, contents=gemini_parts(genai, "make the car blue"), config=config
    )
    assert result.parsed == Verdict(score=2, verdict="follows", reason="make the car blue")
    usage = result.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (530, 20)
    assert usage.total_token_count == 550
    assert result.candidates[0].finish_reason == types.FinishReason.STOP
    assert result.model_version == GEMINI

    seen = server.calls[0]
    assert seen.provider == "gemini" and seen.model == GEMINI and seen.kind == "generate"
    assert seen.images == (SOURCE, TARGET) and seen.image_mime_types == ("image/png",) * 2
    assert seen.system == "You judge image edits." and seen.texts == ("make the car blue",)
    assert seen.schema is not None and seen.schema["type"] == "OBJECT"  # OpenAPI-style, as sent
    record = server.recorded("gemini", "generate")[0]
    assert record.path == f"/v1/models/{GEMINI}:generateContent"
    assert record.headers["x-goog-api-key"] == "fake-key" and record.status == 200

    async def many() -> list[Any]:
        json_config = types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=VERDICT_SCHEMA
        )
        calls = [
            client.aio.models.generate_content(
                model=GEMINI, contents=gemini_parts(genai, f"pair {i}"), config=json_config
            )
            for i in range(6)
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await client.aio.aclose()

    results = asyncio.run(many())
    assert sorted(r.parsed["reason"] for r in results) == [f"pair {i}" for i in range(6)]
    assert all(r.usage_metadata.total_token_count == 550 for r in results)
    assert server.calls[-1].schema == VERDICT_SCHEMA
    assert server.count("gemini") == 7 and server.count("openai") == 0
    client.close()


def test_openai_chat_sync_and_async(openai: Any, server: FakeLLMServer) -> None:
    client = openai_client(openai, server)
    result = client.chat.completions.create(
        model=GPT,
        messages=openai_messages("make the car blue"),
        temperature=0,
        max_completion_tokens=256,
        response_format=JSON_SCHEMA_FORMAT,
    )
    # The default responder answers with an instance of the schema.
    assert json.loads(result.choices[0].message.content) == example_for_schema(VERDICT_SCHEMA)
    assert result.choices[0].finish_reason == "stop" and result.model == GPT
    assert result.usage.prompt_tokens >= 2 * 258 and result.usage.total_tokens > 0

    seen = server.calls[0]
    assert seen.provider == "openai" and seen.images == (SOURCE, TARGET)
    assert seen.system == "You judge image edits."
    assert seen.texts == ("Source image:", "Edited image:", "make the car blue")
    assert seen.schema == VERDICT_SCHEMA and seen.json_mode

    server.responder = lambda request: LLMReply(
        json.dumps({"score": 4, "verdict": "follows", "reason": request.texts[-1]}),
        prompt_tokens=530,
        completion_tokens=20,
    )
    parsed = client.chat.completions.parse(
        model=GPT, messages=openai_messages("parse me"), response_format=Verdict
    )
    assert parsed.choices[0].message.parsed == Verdict(
        score=4, verdict="follows", reason="parse me"
    )
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (530, 20)
    assert server.calls[-1].schema["additionalProperties"] is False  # the SDK's strict schema

    async def many() -> list[Any]:
        async with openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url) as aclient:
            calls = [
                aclient.chat.completions.create(
                    model=GPT,
                    messages=openai_messages(f"pair {i}"),
                    response_format=JSON_SCHEMA_FORMAT,
                )
                for i in range(6)
            ]
            return await asyncio.gather(*calls)

    results = asyncio.run(many())
    reasons = sorted(json.loads(r.choices[0].message.content)["reason"] for r in results)
    assert reasons == [f"pair {i}" for i in range(6)]
    assert all(r.usage.total_tokens == 550 for r in results)
    assert server.count("openai") == 8 and server.count(kind="batch") == 0
    client.close()


def test_streaming_both_providers(genai: Any, openai: Any, server: FakeLLMServer) -> None:
    server.responder = lambda request: "streamed answer for " + request.text
    gclient = gemini_client(genai, server)
    chunks = list(gclient.models.generate_content_stream(model=GEMINI, contents="pair 1"))
    assert "".join(c.text for c in chunks) == "streamed answer for pair 1"
    assert chunks[-1].usage_metadata.total_token_count > 0
    oclient = openai_client(openai, server)
    stream = oclient.chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": "pair 2"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == "streamed answer for pair 2" and events[-1].usage.total_tokens > 0
    assert server.calls[-1].stream and server.count() == 2
    gclient.close()
    oclient.close()


def test_many_concurrent_calls_with_latency(openai: Any, server: FakeLLMServer) -> None:
    server.latency = 0.5

    async def many() -> list[Any]:
        async with openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url) as aclient:
            calls = [
                aclient.chat.completions.create(
                    model=GPT, messages=[{"role": "user", "content": str(i)}]
                )
                for i in range(24)
            ]
            return await asyncio.gather(*calls)

    assert len(asyncio.run(many())) == 24
    # Latency is served concurrently: many calls were sleeping at the same time.
    assert server.max_concurrency >= 6 and server.count() == 24


# --------------------------------------------------------------------------------------------
# Faults: 429 with Retry-After, 5xx, slow, truncated, malformed, disconnect


def test_openai_honours_retry_after(openai: Any, server: FakeLLMServer) -> None:
    client = openai_client(openai, server)
    server.inject(429, retry_after=1.0)
    result = client.chat.completions.create(model=GPT, messages=openai_messages("x"))
    assert result.choices[0].message.content
    records = server.recorded("openai", "generate")
    assert [(r.status, r.fault) for r in records] == [(429, "429"), (200, None)]
    assert [r.headers["x-stainless-retry-count"] for r in records] == ["0", "1"]
    # Without the header the SDK would wait at most 0.5 s before its first retry.
    assert gaps(server, "openai")[0] >= 0.95
    assert server.count() == 1 and server.fault_count(fault=429) == 1

    server.inject(429, retry_after=0.2, times=3)
    with pytest.raises(openai.RateLimitError) as caught:
        client.with_options(max_retries=2).chat.completions.create(
            model=GPT, messages=openai_messages("x")
        )
    assert caught.value.status_code == 429
    assert caught.value.body["code"] == "rate_limit_exceeded"
    client.close()


def test_openai_server_errors(openai: Any, server: FakeLLMServer) -> None:
    client = openai_client(openai, server, max_retries=0)
    for status in (500, 502, 503):
        server.inject(status)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=GPT, messages=openai_messages("x"))
        assert caught.value.status_code == status
        assert caught.value.body["type"] == "server_error"
    server.inject(400, message="bad image")
    with pytest.raises(openai.BadRequestError, match="bad image"):
        client.chat.completions.create(model=GPT, messages=openai_messages("x"))
    # One retry gets past one 503; the default backoff applies (no Retry-After).
    server.inject(503)
    retried = client.with_options(max_retries=1).chat.completions.create(
        model=GPT, messages=openai_messages("x")
    )
    assert retried.choices[0].message.content
    assert server.fault_count("openai") == 5 and server.count("openai") == 1
    # A responder can answer with an API error itself.
    server.responder = lambda request: (_ for _ in ()).throw(LLMError(404, "no such model"))
    with pytest.raises(openai.NotFoundError, match="no such model"):
        client.chat.completions.create(model=GPT, messages=openai_messages("x"))
    client.close()


def test_gemini_errors_and_retry_options(genai: Any, server: FakeLLMServer) -> None:
    errors = pytest.importorskip("google.genai.errors")
    plain = gemini_client(genai, server)  # no retry_options: one attempt only
    server.inject(429, retry_after=5)
    with pytest.raises(errors.ClientError) as caught:
        plain.models.generate_content(model=GEMINI, contents="x")
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert caught.value.details["error"]["details"][0]["retryDelay"] == "5s"
    server.inject(503)
    with pytest.raises(errors.ServerError) as server_error:
        plain.models.generate_content(model=GEMINI, contents="x")
    assert (server_error.value.code, server_error.value.status) == (503, "UNAVAILABLE")
    server.inject(500)
    with pytest.raises(errors.ServerError, match="INTERNAL"):
        plain.models.generate_content(model=GEMINI, contents="x")
    assert server.count("gemini") == 0 and server.fault_count("gemini") == 3

    server.reset()
    retry = genai.types.HttpRetryOptions(attempts=4, initial_delay=0.05, max_delay=0.2, jitter=0)
    retrying = gemini_client(genai, server, retry_options=retry)
    server.inject(429, retry_after=5)
    server.inject(503)
    server.inject(500)
    assert retrying.models.generate_content(model=GEMINI, contents="x").text
    statuses = [r.status for r in server.recorded("gemini", "generate")]
    assert statuses == [429, 503, 500, 200]
    # google-genai does not honour Retry-After / RetryInfo: it retried long before 5 s.
    assert gaps(server, "gemini")[0] < 5
    server.inject(400)
    with pytest.raises(errors.ClientError):  # 400 is not retried
        retrying.models.generate_content(model=GEMINI, contents="x")
    assert len(server.recorded("gemini", "generate")) == 5
    plain.close()
    retrying.close()


def test_client_timeouts_on_slow_answers(genai: Any, openai: Any, server: FakeLLMServer) -> None:
    oclient = openai_client(openai, server, timeout=0.3, max_retries=0)
    server.inject("slow", seconds=3)
    with pytest.raises(openai.APITimeoutError):
        oclient.chat.completions.create(model=GPT, messages=openai_messages("x"))
    server.inject("slow", seconds=3)  # the SDK's own retry after a timeout gets a quick answer
    assert oclient.with_options(timeout=1.0, max_retries=1).chat.completions.create(
        model=GPT, messages=openai_messages("x")
    )
    assert [r.fault for r in server.recorded("openai")] == ["slow", "slow", None]
    gclient = gemini_client(genai, server, timeout=300)  # milliseconds
    server.inject("slow", seconds=3)
    with pytest.raises(Exception) as caught:
        gclient.models.generate_content(model=GEMINI, contents="x")
    assert "Timeout" in type(caught.value).__name__  # httpx2.ReadTimeout, not an APIError
    assert server.fault_count(fault="slow") == 3
    oclient.close()
    gclient.close()


def test_truncated_malformed_and_disconnected_answers(
    genai: Any, openai: Any, server: FakeLLMServer
) -> None:
    oclient = openai_client(openai, server, max_retries=0)
    gclient = gemini_client(genai, server)
    json_config = genai.types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=Verdict
    )

    server.inject("truncated")
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's body parsing
        oclient.chat.completions.create(model=GPT, messages=openai_messages("x"))
    server.inject("truncated")
    with pytest.raises(ValueError):
        gclient.models.generate_content(model=GEMINI, contents="x", config=json_config)

    server.inject("malformed")
    chatty = oclient.chat.completions.create(
        model=GPT, messages=openai_messages("x"), response_format=JSON_SCHEMA_FORMAT
    )
    content = chatty.choices[0].message.content
    with pytest.raises(ValueError):
        json.loads(content)
    assert "```json" in content  # the real answer is still inside the fence
    server.inject("malformed", text="I cannot judge this pair.")
    with pytest.raises(ValueError):  # pydantic's ValidationError
        oclient.chat.completions.parse(
            model=GPT, messages=openai_messages("x"), response_format=Verdict
        )
    server.inject("malformed")
    unparsed = gclient.models.generate_content(model=GEMINI, contents="x", config=json_config)
    assert unparsed.parsed is None and unparsed.text.startswith("Sure!")

    server.inject("disconnect")
    with pytest.raises(openai.APIConnectionError):
        oclient.chat.completions.create(model=GPT, messages=openai_messages("x"))
    server.inject("disconnect")
    with pytest.raises(Exception, match="peer closed connection"):
        gclient.models.generate_content(model=GEMINI, contents="x")
    # Each faulted call still produced an answer, so each reached the responder.
    assert server.count() == 7 and server.fault_count() == 7
    oclient.close()
    gclient.close()


def test_faults_for_one_provider_and_responder_bugs(
    genai: Any, openai: Any, server: FakeLLMServer
) -> None:
    server.inject(503, provider="openai")
    gclient = gemini_client(genai, server)
    assert gclient.models.generate_content(model=GEMINI, contents="x").text  # not for Gemini
    oclient = openai_client(openai, server, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        oclient.chat.completions.create(model=GPT, messages=openai_messages("x"))

    server.responder = lambda request: 1 / 0  # a bug in a test's responder is loud
    with pytest.raises(openai.InternalServerError, match="ZeroDivisionError"):
        oclient.chat.completions.create(model=GPT, messages=openai_messages("x"))
    assert any("ZeroDivisionError" in error for error in server.errors)
    server.errors.clear()
    gclient.close()
    oclient.close()


def test_api_key_is_checked_when_set(genai: Any, openai: Any) -> None:
    errors = pytest.importorskip("google.genai.errors")
    with FakeLLMServer(api_key="right") as server:
        wrong = genai.Client(api_key="wrong", http_options={"base_url": server.url})
        with pytest.raises(errors.ClientError, match="API key not valid"):
            wrong.models.generate_content(model=GEMINI, contents="x")
        right = genai.Client(api_key="right", http_options={"base_url": server.url})
        assert right.models.generate_content(model=GEMINI, contents="x").text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="nope", base_url=server.openai_base_url).chat.completions.create(
                model=GPT, messages=openai_messages("x")
            )
        wrong.close()
        right.close()


# --------------------------------------------------------------------------------------------
# Batch APIs end to end


def batch_responder(request: LLMRequest) -> str:
    if request.key == "broken":
        raise LLMError(400, "cannot read the target image")
    return json.dumps({"key": request.key, "images": len(request.images), "text": request.text})


def test_gemini_batch_inline(genai: Any) -> None:
    types = genai.types
    with FakeLLMServer(responder=batch_responder, batch_polls=2) as server:
        client = gemini_client(genai, server, api_version="v1beta")
        keys = ["pair-1", "pair-2", "broken"]
        source = [
            types.InlinedRequest(
                contents=gemini_parts(genai, f"judge {key}"),
                metadata={"key": key},
                config=types.GenerateContentConfig(
                    response_mime_type="application/json", response_json_schema=VERDICT_SCHEMA
                ),
            )
            for key in keys
        ]
        job = client.batches.create(model=GEMINI, src=source, config={"display_name": "run-1"})
        assert job.name.startswith("batches/") and job.display_name == "run-1"
        assert server.recorded("gemini", "batches")[0].path.endswith(
            f"/v1beta/models/{GEMINI}:batchGenerateContent"
        )
        states = [job.state.name]
        while not job.done:
            job = client.batches.get(name=job.name)
            states.append(job.state.name)
        assert states == [
            "JOB_STATE_PENDING",
            "JOB_STATE_PENDING",
            "JOB_STATE_RUNNING",
            "JOB_STATE_SUCCEEDED",
        ]
        by_key = {item.metadata["key"]: item for item in job.dest.inlined_responses}
        assert set(by_key) == set(keys)
        answer = json.loads(by_key["pair-2"].response.text)
        assert answer == {"key": "pair-2", "images": 2, "text": "judge pair-2"}
        assert by_key["pair-1"].response.usage_metadata.total_token_count > 0
        assert by_key["broken"].response is None
        assert by_key["broken"].error.message == "cannot read the target image"
        assert server.count(kind="batch") == 3 and server.count(kind="generate") == 0
        assert [b.name for b in client.batches.list()] == [job.name]
        client.close()


def test_gemini_batch_from_uploaded_file(genai: Any, tmp_path: Path) -> None:
    types = genai.types
    with FakeLLMServer(responder=batch_responder) as server:
        client = gemini_client(genai, server, api_version="v1beta")
        image = {
            "inline_data": {"mime_type": "image/png", "data": base64.b64encode(SOURCE).decode()}
        }
        lines = [
            {"key": key, "request": {"contents": [{"parts": [image, {"text": f"judge {key}"}]}]}}
            for key in ("pair-1", "pair-2", "pair-3", "broken")
        ]
        path = tmp_path / "batch-in.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        uploaded = client.files.upload(
            file=str(path),
            config=types.UploadFileConfig(display_name="judge-in", mime_type="jsonl"),
        )
        assert uploaded.name.startswith("files/") and uploaded.size_bytes == path.stat().st_size
        start, finish = server.recorded("gemini", "upload")
        assert start.headers["x-goog-upload-command"] == "start"
        assert finish.headers["x-goog-upload-command"] == "upload, finalize"
        assert finish.raw == path.read_bytes()

        job = client.batches.create(model=GEMINI, src=uploaded.name)
        while not job.done:
            job = client.batches.get(name=job.name)
        assert job.state.name == "JOB_STATE_SUCCEEDED" and job.dest.file_name.startswith("files/")
        output = client.files.get(name=job.dest.file_name)
        assert output.download_uri and output.source.name == "GENERATED"
        results = [json.loads(line) for line in client.files.download(file=output).splitlines()]
        assert [r["key"] for r in results] == [line["key"] for line in lines]  # one per input line
        by_key = {r["key"]: r for r in results}
        text = by_key["pair-3"]["response"]["candidates"][0]["content"]["parts"][0]["text"]
        assert json.loads(text) == {"key": "pair-3", "images": 1, "text": "judge pair-3"}
        assert "response" not in by_key["broken"] and by_key["broken"]["error"]["code"] == 3

        other = client.batches.create(model=GEMINI, src=uploaded.name)
        client.batches.cancel(name=other.name)
        assert client.batches.get(name=other.name).state.name == "JOB_STATE_CANCELLED"
        assert server.count(kind="batch") == 4  # the cancelled job never ran
        client.close()


def test_openai_batch(openai: Any) -> None:
    with FakeLLMServer(responder=batch_responder, batch_polls=2, seed=1) as server:
        client = openai_client(openai, server)
        keys = [f"pair-{i}" for i in range(8)] + ["broken"]
        lines = [
            {
                "custom_id": key,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": GPT, "messages": openai_messages(f"judge {key}")},
            }
            for key in keys
        ]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        uploaded = client.files.create(file=("batch-in.jsonl", data), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "test"},
        )
        statuses = [batch.status]
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            batch = client.batches.retrieve(batch.id)
            statuses.append(batch.status)
        assert statuses == ["validating", "in_progress", "in_progress", "completed"]
        assert batch.request_counts.total == 9 and batch.request_counts.failed == 1
        assert batch.metadata == {"run": "test"} and batch.model == GPT

        output = [
            json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()
        ]
        assert [o["custom_id"] for o in output] != keys[:8]  # shuffled, as the real API may
        by_id = {o["custom_id"]: o for o in output}
        assert set(by_id) == set(keys[:8])
        body = by_id["pair-5"]["response"]["body"]
        assert (
            by_id["pair-5"]["response"]["status_code"] == 200 and by_id["pair-5"]["error"] is None
        )
        assert json.loads(body["choices"][0]["message"]["content"])["images"] == 2
        assert body["usage"]["total_tokens"] > 0
        (failed,) = [
            json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()
        ]
        assert failed["custom_id"] == "broken" and failed["response"]["status_code"] == 400
        assert failed["response"]["body"]["error"]["message"] == "cannot read the target image"
        assert server.count("openai", kind="batch") == 9
        assert [b.id for b in client.batches.list()] == [batch.id]

        # Input the real service would refuse fails validation as a whole.
        bad = data + (json.dumps(lines[0]) + "\n").encode()  # a duplicate custom_id
        refused = client.batches.create(
            input_file_id=client.files.create(file=("bad.jsonl", bad), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        refused = client.batches.retrieve(refused.id)
        assert refused.status == "failed" and refused.errors.data[0].code == "duplicate_custom_id"
        assert refused.output_file_id is None
        client.close()
