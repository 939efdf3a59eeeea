"""Captioning over HTTP, end to end: spec, runner, real SDK, local fake server, store.

The fake server (``ecap.testing.FakeLLMServer``) speaks the OpenAI and Gemini protocols. Its
scripted captioner answers from what each request carries (which target image it saw), so a
caption stored for the wrong pair, or twice, would show. Calls are counted at the server: the only
honest way to show that a finished call was not paid for again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ecap.records import SampleError
from ecap.store.schema import InstructionRow, SampleFailure
from ecap.testing import (
    FakeLLMServer,
    LLMReply,
    LLMRequest,
    count_api_calls,
    kill_run_when,
    query_store,
    run_spec,
)

pytest.importorskip("openai")
pytest.importorskip("google.genai")

REPO = Path(__file__).resolve().parent.parent
PAIRS = 6


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    shutil.copytree(REPO / "examples" / "quickstart" / "data", tmp_path / "data")
    return tmp_path


def targets(workdir: Path) -> dict[str, str]:
    """sha256 of each target image's bytes -> the image's name."""
    return {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.name.removesuffix("-target.png")
        for p in (workdir / "data" / "images").glob("*-target.png")
    }


def pair_name(request: LLMRequest) -> str:
    return TARGETS[hashlib.sha256(request.images[1]).hexdigest()]


def captioner(request: LLMRequest) -> str:
    """Names the target it saw: a caption stored under another pair would give itself away."""
    return f"Edit the picture as in {pair_name(request)}."


TARGETS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def known_targets(workdir: Path) -> None:
    TARGETS.clear()
    TARGETS.update(targets(workdir))


def write_spec(
    folder: Path,
    server: FakeLLMServer,
    *,
    plugin: str = "vlm",
    backend: str = "openai-compatible",
    options: dict[str, Any] | None = None,
    **config: Any,
) -> Path:
    settings: dict[str, Any] = {
        "base_url": server.url if backend == "gemini" else server.openai_base_url,
        "api_key": "${env:FAKE_LLM_KEY}",
        "backoff": 0.01,
        "max_backoff": 0.05,
        **(options or {}),
    }
    step: dict[str, Any] = {"backend": backend, "options": settings, **config}
    if plugin == "vlm":
        step.setdefault("model", "tiny-captioner")
    spec = {
        "name": "remote-captions",
        "store": f"sqlite:///{folder / 'ecap.db'}",
        "steps": {
            "pairs": {"source": "csv", "with": {"path": "data/pairs.csv"}},
            "captions": {"caption": plugin, "from": "pairs", "with": step},
        },
    }
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path


def query(folder: Path, statement: Any) -> list[Any]:
    return query_store(folder / "ecap.db", statement)


def captions(folder: Path) -> list[InstructionRow]:
    return query(folder, select(InstructionRow).where(InstructionRow.origin == "model"))


def api_calls(folder: Path, status: str) -> int:
    return count_api_calls(folder / "ecap.db", status)


def assert_each_pair_captioned_once(folder: Path) -> None:
    rows = captions(folder)
    assert len(rows) == PAIRS
    assert len({row.pair_id for row in rows}) == PAIRS
    assert sorted(row.text for row in rows) == sorted(
        f"Edit the picture as in {name}." for name in TARGETS.values()
    )


def test_the_request_carries_both_images_in_order_the_prompt_and_the_sampling(
    workdir: Path,
) -> None:
    with FakeLLMServer(captioner) as server:
        spec = write_spec(
            workdir,
            server,
            sampling={"max_new_tokens": 64, "temperature": 0.2, "top_p": 0.9, "seed": 5},
            prompt="Say how {category} changed.",
        )
        assert run_spec(spec).status == "complete"
        calls = list(server.calls)

    assert len(calls) == PAIRS
    images = workdir / "data" / "images"
    for call in calls:
        name = pair_name(call)
        source, target = (images / f"{name}-{side}.png" for side in ("source", "target"))
        body = call.body
        (message,) = body["messages"]
        assert message["role"] == "user"
        assert [p["type"] for p in message["content"]] == [
            "text",
            "image_url",
            "text",
            "image_url",
            "text",
        ]
        assert message["content"][0]["text"] == "Source image:"
        assert message["content"][2]["text"] == "Target image:"
        assert message["content"][4]["text"].startswith("Say how ")
        for part, path in ((message["content"][1], source), (message["content"][3], target)):
            header, _, data = part["image_url"]["url"].partition(",")
            assert header == "data:image/png;base64"
            assert base64.b64decode(data) == path.read_bytes()
        assert call.images == (source.read_bytes(), target.read_bytes())
        assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_p", "seed")} == {
            "model": "tiny-captioner",
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 5,
        }
        assert "top_k" not in body and "chat_template_kwargs" not in body
    categories = {c.texts[-1] for c in calls}
    assert "Say how attribute changed." in categories

    rows = captions(workdir)
    assert all(row.author == "tiny-captioner" for row in rows)
    assert all(row.meta["backend"] == "openai-compatible" for row in rows)
    assert all(row.meta["served_model"] == "tiny-captioner" for row in rows)


def test_rate_limits_server_errors_drops_and_timeouts_lose_and_duplicate_nothing(
    workdir: Path,
) -> None:
    with FakeLLMServer(captioner) as server:
        server.inject(429, retry_after=0.2)
        server.inject(503)
        server.inject(500)
        server.inject("disconnect")
        server.inject("truncated")
        server.inject("slow", seconds=3)
        spec = write_spec(workdir, server, options={"timeout": 0.5, "max_concurrent_calls": 2})
        started = time.monotonic()
        result = run_spec(spec)
        elapsed = time.monotonic() - started
        assert not server.pending_faults
        assert server.fault_count() == 6

    assert result.status == "complete"
    assert query(workdir, select(SampleFailure)) == []
    assert_each_pair_captioned_once(workdir)
    assert api_calls(workdir, "ok") == PAIRS
    assert elapsed >= 0.2, "the 429's Retry-After was waited for"


def test_a_killed_step_resumes_without_resending_finished_calls(workdir: Path) -> None:
    with FakeLLMServer(captioner, latency=0.3) as server:
        spec = write_spec(workdir, server, options={"max_concurrent_calls": 1})
        kill_run_when(
            [sys.executable, "-m", "ecap.cli", "pipeline", "run", str(spec), "--no-progress"],
            lambda: server.count() >= 3,
            env={**os.environ, "FAKE_LLM_KEY": "sk-fake"},
        )

        logged = api_calls(workdir, "ok")
        assert 2 <= logged < PAIRS, "killed half-way, with answers logged"
        assert captions(workdir) == [], "the batch had not been committed"
        before = server.count()
        assert run_spec(spec).status == "complete"
        resent = server.count() - before

    assert resent == PAIRS - logged, "exactly the calls without a logged answer were sent"
    assert_each_pair_captioned_once(workdir)


def test_unusable_answers_fail_their_pair_and_are_asked_again_next_run(workdir: Path) -> None:
    bad = {
        "add-box": "",
        "add-tree": "<think>The tree appears on the left, so I should say that the",
        "night": "Make it night. " * 400,
    }

    def flaky(request: LLMRequest) -> str:
        return bad.get(pair_name(request), captioner(request))

    with FakeLLMServer(flaky) as server:
        spec = write_spec(workdir, server, sampling={"temperature": 0.7})  # sampled: ask again
        result = run_spec(spec, max_error_rate=1.0)
        assert result.steps["captions"].counts == {
            "inputs": PAIRS,
            "cached": 0,
            "done": PAIRS - 3,
            "failed": 3,
            "pending": 0,
        }
        kinds = sorted(f.error_type for f in query(workdir, select(SampleFailure)))
        assert kinds == ["AnswerTooLong", "EmptyAnswer", "ThinkingOnly"]
        assert api_calls(workdir, "error") == 3, "unusable answers are never served again"

        bad.clear()
        before = server.count()
        assert run_spec(spec).status == "complete"
        assert server.count() - before == 3, "only the failed pairs were asked again"

    assert_each_pair_captioned_once(workdir)


def test_n_candidates_are_separate_calls_with_their_own_seeds(workdir: Path) -> None:
    def sampled(request: LLMRequest) -> str:
        return f"{captioner(request)} (seed {request.body['seed']})"

    with FakeLLMServer(sampled) as server:
        spec = write_spec(workdir, server, n=3, sampling={"temperature": 0.8, "seed": 10})
        assert run_spec(spec).status == "complete"
        assert server.count() == 3 * PAIRS
        assert sorted({c.body["seed"] for c in server.calls}) == [10, 11, 12]

    rows = captions(workdir)
    assert len(rows) == 3 * PAIRS
    for row in rows:
        assert row.text.endswith(f"(seed {10 + row.candidate})")


def test_glm_strips_thinking_and_box_markers_and_switches_thinking_per_server(
    workdir: Path,
) -> None:
    def glm(request: LLMRequest) -> str:
        answer = captioner(request)
        return f"<think>Compare the two.</think><|begin_of_box|>{answer}<|end_of_box|>"

    with FakeLLMServer(glm) as server:
        spec = write_spec(workdir, server, plugin="glm", sampling={"max_new_tokens": 300})
        assert run_spec(spec).status == "complete"
        (body, *_) = [c.body for c in server.calls]
        # A self-hosted server (here 127.0.0.1) gets the chat-template argument ...
        assert body["model"] == "glm-4.5v"
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert "thinking" not in body
        assert_each_pair_captioned_once(workdir)
        row = captions(workdir)[0]
        assert row.meta["raw"].startswith("<think>Compare the two.</think><|begin_of_box|>")

        server.reset()
        other = workdir / "api"
        shutil.copytree(workdir / "data", other / "data")
        spec = write_spec(other, server, plugin="glm", thinking_control="api", thinking=True)
        assert run_spec(spec).status == "complete"
        body = server.calls[0].body
        # ... and Zhipu's API its own request field.
        assert body["thinking"] == {"type": "enabled"}
        assert "chat_template_kwargs" not in body


def test_reasoning_returned_apart_is_kept_out_of_the_answer() -> None:
    from ecap.providers.openai import reply as openai_reply
    from ecap_vlm.backends.openai_compat import _with_reasoning_inline
    from ecap_vlm.cleaning import UnusableAnswer, clean_answer

    def _reply(body: dict[str, Any]) -> Any:
        return _with_reasoning_inline(openai_reply(body))

    def body(content: str | None, reasoning: str | None) -> dict[str, Any]:
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        return {"model": "glm-4.5v", "choices": [{"message": message, "finish_reason": "stop"}]}

    reply = _reply(body("Add a red kite in the sky.", "A kite appears top left."))
    cleaned = clean_answer(reply.text)
    assert (cleaned.text, cleaned.reasoning) == (
        "Add a red kite in the sky.",
        "A kite appears top left.",
    )
    with pytest.raises(UnusableAnswer) as only_thinking:
        clean_answer(_reply(body(None, "Still comparing the two images")).text)
    assert only_thinking.value.kind == "ThinkingOnly"


def test_gemini_gets_the_same_content_natively(workdir: Path) -> None:
    with FakeLLMServer(captioner) as server:
        spec = write_spec(
            workdir,
            server,
            backend="gemini",
            model="gemini-3-pro-preview",
            system="You write image-editing instructions.",
            sampling={"max_new_tokens": 128, "temperature": 0.0, "seed": 3},
            options={"thinking_level": "low"},
        )
        assert run_spec(spec).status == "complete"
        calls = list(server.calls)

    assert {c.provider for c in calls} == {"gemini"}
    images = workdir / "data" / "images"
    for call in calls:
        name = pair_name(call)
        assert call.images == tuple(
            (images / f"{name}-{side}.png").read_bytes() for side in ("source", "target")
        )
        assert call.texts[:2] == ("Source image:", "Target image:")
        assert call.system == "You write image-editing instructions."
        config = call.body["generationConfig"]
        assert (config["maxOutputTokens"], config["temperature"], config["seed"]) == (128, 0.0, 3)
        assert list(config["thinkingConfig"].values()) == ["LOW"]  # the SDK's own casing
    assert_each_pair_captioned_once(workdir)
    assert all(row.author == "gemini-3-pro-preview" for row in captions(workdir))


def test_a_greedy_unusable_answer_is_not_paid_for_again(workdir: Path) -> None:
    def empty_for_night(request: LLMRequest) -> str:
        return "" if pair_name(request) == "night" else captioner(request)

    with FakeLLMServer(empty_for_night) as server:
        spec = write_spec(workdir, server)  # temperature 0: the same answer would come back
        assert run_spec(spec, max_error_rate=1.0).steps["captions"].counts["failed"] == 1
        before = server.count()
        again = run_spec(spec, max_error_rate=1.0)
        assert server.count() == before, "the rejected answer was served from the call log"
        assert again.steps["captions"].counts["failed"] == 1
        assert api_calls(workdir, "rejected") == 1
    assert {f.error_type for f in query(workdir, select(SampleFailure))} == {"EmptyAnswer"}


def test_an_answer_cut_off_by_max_new_tokens_fails_its_pair(workdir: Path) -> None:
    def cut_for_night(request: LLMRequest) -> str | LLMReply:
        if pair_name(request) == "night":
            return LLMReply("<think>The sky darkens, so the", finish_reason="length")
        if pair_name(request) == "add-box":
            return LLMReply("Add a wooden box on the", finish_reason="length")
        return captioner(request)

    for backend in ("openai-compatible", "gemini"):
        folder = workdir / backend
        shutil.copytree(workdir / "data", folder / "data")
        with FakeLLMServer(cut_for_night) as server:
            spec = write_spec(folder, server, backend=backend, model="tiny-captioner")
            result = run_spec(spec, max_error_rate=1.0)
        assert result.steps["captions"].counts["failed"] == 2, backend
        kinds = {f.error_type for f in query(folder, select(SampleFailure))}
        assert kinds == {"Truncated"}, backend
        texts = {row.text for row in captions(folder)}
        assert not any("box" in t or "sky" in t for t in texts)


def test_one_backend_serves_two_consecutive_event_loops(workdir: Path) -> None:
    import asyncio

    from ecap.images import PreparedImage
    from ecap.interfaces import PluginContext
    from ecap.vlm import Sampling, VLMRequest, make_backend

    image = (workdir / "data" / "images").glob("*.png").__next__().read_bytes()
    prepared = PreparedImage(image, "image/png", hashlib.sha256(image).hexdigest())
    for backend_name in ("openai-compatible", "gemini"):
        with FakeLLMServer(captioner) as server:
            url = server.url if backend_name == "gemini" else server.openai_base_url
            backend = make_backend(
                backend_name,
                model="tiny-captioner",
                revision=None,
                options={"base_url": url, "api_key": "sk-fake"},
                context=PluginContext(step_id="s", base_dir=workdir, work_dir=workdir),
            )
            request = VLMRequest(
                prompt="What changed?", source=prepared, target=prepared, sampling=Sampling()
            )
            for _ in range(2):  # each asyncio.run is a new loop; the first one's is closed
                (outcome,) = asyncio.run(backend.generate([request]))
                assert not isinstance(outcome, SampleError), outcome
            backend.close()
            assert server.count() == 2


def test_a_missing_sdk_fails_the_step_once_with_the_install_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLLMServer(captioner) as server:
        spec = write_spec(workdir, server)
        monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
        result = run_spec(spec)
        assert server.count() == 0
    step = result.steps["captions"]
    assert step.status == "failed"
    assert "pip install 'editcaption[api]'" in str(step.error)
    assert query(workdir, select(SampleFailure)) == [], "no pair carries a copy of it"
