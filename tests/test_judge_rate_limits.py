"""A judge stays within the provider's requests a minute: the fake server refuses calls over its
limit as OpenAI and Gemini do (429s in their formats, OpenAI's rate-limit headers), a judge with
``requests_per_minute`` configured below that limit is never refused, and a judge with none
learns the limit from the refusals and still gives every pair its verdict."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ecap.hashing import semantic_config
from ecap.interfaces import PluginContext, Source
from ecap.providers.limits import google_signal, header_signal, parse_duration
from ecap.records import Verdict
from ecap.remote import HEADROOM, Pacer, RateLimited, RateSignal
from ecap.spec import load_spec
from ecap.testing import FakeLLMServer, LLMRequest, registry_with_fakes, run_spec
from ecap.testing.servers import RateLimit
from ecap_judges.engine import RubricJudge

pytest.importorskip("google.genai")
pytest.importorskip("openai")

PAIRS = 8
AXES = 3
MODELS = {"gemini": "gemini-2.5-pro", "openai": "gpt-4.1"}


def answer(request: LLMRequest) -> dict[str, Any]:
    """A valid judgement for whichever axis the request's schema describes."""
    schema = json.dumps(request.schema or {}).lower()
    checks = [{"change": 1, "status": "hit"}]
    if "hallucination" in schema:
        return {
            "assertions": ["the ball turns blue"],
            "primary_changes": checks,
            "hallucination": False,
            "major_errors": 0,
            "minor_errors": 0,
            "score": 5,
            "reasoning": "r",
        }
    if "secondary_covered" in schema:
        return {"primary_changes": checks, "secondary_covered": True, "score": 5, "reasoning": "r"}
    return {"forbidden_terms": [], "score": 5, "reasoning": "r"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    images = tmp_path / "images"
    images.mkdir()
    with (tmp_path / "eval.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["source", "target", "instruction", "primary", "secondary", "overall"])
        for i in range(PAIRS):
            for side, blue in (("s", 40), ("t", 200)):
                Image.new("RGB", (16, 16), (i * 20, 90, blue)).save(images / f"{i}-{side}.png")
            writer.writerow(
                [
                    f"images/{i}-s.png",
                    f"images/{i}-t.png",
                    f"Turn ball {i} blue.",
                    json.dumps(["the ball turns blue"]),
                    json.dumps([]),
                    "a blue ball",
                ]
            )
    return tmp_path


def write_spec(folder: Path, server: FakeLLMServer, provider: str, **options: Any) -> Path:
    judge = {
        "model": MODELS[provider],
        "api_key": "${env:FAKE_LLM_KEY}",
        "base_url": server.url if provider == "gemini" else server.openai_base_url,
        "max_concurrent_calls": 16,
        "backoff": 0.01,
        "max_backoff": 0.05,
        **options,
    }
    spec = {
        "name": f"limits-{provider}",
        "store": f"sqlite:///{folder / 'ecap.db'}",
        "steps": {
            "eval": {"source": "csv", "with": {"path": "eval.csv"}},
            "judge": {"judge": provider, "from": "eval", "with": judge},
        },
    }
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))
    return path


def judge_directly(spec_path: Path, folder: Path) -> tuple[RubricJudge, list[Any]]:
    """Build the spec's source and judge and judge every pair in one batch, without a store:
    the judge object (and its pacer) stays at hand."""
    spec = load_spec(spec_path, registry_with_fakes())
    plugins = {
        step_id: spec.steps[step_id].plugin.cls(
            spec.steps[step_id].config,
            PluginContext(step_id=step_id, base_dir=folder, work_dir=folder),
        )
        for step_id in ("eval", "judge")
    }
    source, judge = plugins["eval"], plugins["judge"]
    assert isinstance(source, Source) and isinstance(judge, RubricJudge)
    items = [
        item for row in source.load(list(source.rows())) if isinstance(row, list) for item in row
    ]

    async def judged() -> list[Any]:
        try:
            return await judge.ajudge(items)
        finally:
            await judge.provider.aclose()

    return judge, asyncio.run(judged())


# -- the fake server is as strict as the real services ------------------------------------------


def test_openai_refusals_carry_the_headers_and_body_openai_sends() -> None:
    import openai

    with FakeLLMServer(rate_limit=RateLimit(120, window=1)) as server:  # 2 calls a second
        client = openai.OpenAI(api_key="k", base_url=server.openai_base_url, max_retries=0)
        answered = client.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
            )
        assert server.rate_limited("openai") == 1 and server.count() == 2, "refusals cost nothing"

    assert answered.headers["x-ratelimit-limit-requests"] == "120"
    assert answered.headers["x-ratelimit-remaining-requests"] == "1"
    assert parse_duration(answered.headers["x-ratelimit-reset-requests"]) == pytest.approx(1, 0.1)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["retry-after"] == "1"
    assert refused.value.code == "rate_limit_exceeded"
    signal = header_signal(headers, refused=True)
    assert signal == RateSignal(requests_per_minute=120, wait=1, refused=True)


def test_gemini_refusals_are_resource_exhausted_with_the_quota_and_retry_info() -> None:
    from google import genai
    from google.genai import errors

    with FakeLLMServer(rate_limit=RateLimit(60, window=1)) as server:  # 1 call a second
        client = genai.Client(api_key="k", http_options={"base_url": server.url})
        client.models.generate_content(model="gemini-2.5-pro", contents="hi")
        with pytest.raises(errors.ClientError) as refused:
            client.models.generate_content(model="gemini-2.5-pro", contents="hi")
        assert server.rate_limited("gemini") == 1 and server.rate_limited("openai") == 0

    assert refused.value.code == 429 and refused.value.status == "RESOURCE_EXHAUSTED"
    assert not refused.value.response.headers.get("retry-after"), "Google says it in the body"
    assert google_signal(refused.value.details) == RateSignal(
        requests_per_minute=60, wait=1, refused=True
    )


def test_the_window_slides_and_refusals_do_not_count_against_it() -> None:
    with FakeLLMServer() as server:
        server.limit_requests(RateLimit(120, window=60))  # the whole minute's budget at once ...
        admitted = [server._admit("openai") for _ in range(121)]
    assert [a.admitted for a in admitted if a is not None].count(True) == 120
    refusal = admitted[-1]
    assert refusal is not None and not refusal.admitted
    assert 59 < refusal.retry_after <= 60, "... is back only when its first call is a minute old"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("6m0s", 360), ("250ms", 0.25), ("1.5s", 1.5), ("1h2m3s", 3723), ("soon", None)],
)
def test_durations_are_read_as_openai_and_google_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# -- the pacer ----------------------------------------------------------------------------------


def test_a_stated_limit_is_paced_below_and_a_refusal_lowers_the_pace() -> None:
    pacer = Pacer(requests_per_minute=None, tokens_per_minute=None)
    assert pacer.pace is None, "nothing known: as fast as the concurrency allows"
    pacer.observe(RateSignal(requests_per_minute=600))
    assert pacer.pace == pytest.approx(600 * HEADROOM)
    pacer.observe(RateSignal(refused=True, wait=0.5))
    assert pacer.pace is not None and pacer.pace < 600 * HEADROOM
    slower = pacer.pace
    pacer.observe(RateSignal(refused=True, wait=0.5))
    assert pacer.pace == slower, "one burst of refusals slows the pace once"


def test_a_configured_limit_wins_over_a_higher_stated_one() -> None:
    pacer = Pacer(requests_per_minute=100, tokens_per_minute=None)
    pacer.observe(RateSignal(requests_per_minute=10_000))
    assert pacer.pace == pytest.approx(100 * HEADROOM)
    pacer.observe(RateSignal(requests_per_minute=50))
    assert pacer.pace == pytest.approx(50 * HEADROOM)


def test_the_limits_are_transport_settings_that_leave_cached_verdicts_valid() -> None:
    config = RubricJudge.Config(model="m")
    limited = RubricJudge.Config(model="m", requests_per_minute=60, tokens_per_minute=90_000)
    assert semantic_config(config) == semantic_config(limited)


# -- a judge within the limits ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_a_judge_configured_below_the_servers_limit_is_never_refused(
    provider: str, workdir: Path
) -> None:
    # At most 10 calls in any second; the judge is told 480 a minute, i.e. 8 a second.
    with FakeLLMServer(answer, rate_limit=RateLimit(600, window=1)) as server:
        result = run_spec(write_spec(workdir, server, provider, requests_per_minute=480))
        assert result.status == "complete"
        assert server.rate_limited() == 0
        assert server.count() == PAIRS * AXES


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_without_a_configured_limit_the_judge_learns_it_and_every_pair_gets_a_verdict(
    provider: str, workdir: Path
) -> None:
    # 16 calls go out at once against 10 allowed in any second: some must be refused.
    with FakeLLMServer(answer, rate_limit=RateLimit(600, window=1)) as server:
        judge, results = judge_directly(write_spec(workdir, server, provider), workdir)
        refused = server.rate_limited()
        assert refused > 0
        assert server.count() == PAIRS * AXES, "each call answered once, after its refusals"

    assert all(isinstance(r, Verdict) for r in results) and len(results) == PAIRS
    assert judge.pacer.refusals == refused, "the judge saw every refusal"
    assert judge.pacer.pace is not None and judge.pacer.pace <= 600, "and slowed down to the limit"


def test_a_gemini_refusal_without_retry_info_still_ends_with_every_verdict(workdir: Path) -> None:
    limit = RateLimit(600, window=1, retry_info=False)
    with FakeLLMServer(answer, rate_limit=limit) as server:
        judge, results = judge_directly(write_spec(workdir, server, "gemini"), workdir)
        assert server.rate_limited() > 0
    assert all(isinstance(r, Verdict) for r in results) and len(results) == PAIRS
    assert judge.pacer.pace is not None and judge.pacer.pace <= 600


def test_a_refusal_raised_to_the_caller_says_what_the_server_said() -> None:
    import openai as sdk

    from ecap.providers.openai import post_chat_completion

    async def two_calls(url: str) -> RateLimited:
        client = sdk.AsyncOpenAI(api_key="k", base_url=url, max_retries=0)
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
        pacer = Pacer(None, None)
        try:
            await post_chat_completion(client, body, "test", pacer)
            assert pacer.pace == pytest.approx(60 * HEADROOM), "learned from the answer's headers"
            with pytest.raises(RateLimited) as caught:
                await post_chat_completion(client, body, "test", pacer)
            assert pacer.refusals == 1
            return caught.value
        finally:
            await client.close()

    with FakeLLMServer(rate_limit=RateLimit(60, window=1)) as server:
        refusal = asyncio.run(two_calls(server.openai_base_url))
    assert refusal.after == 1 and refusal.signal.requests_per_minute == 60
