"""The gemini and openai judges end to end: spec, runner, real SDK, local fake server, store.

The fake server (``ecap.testing.FakeLLMServer``) speaks each provider's REST protocol; the scripted
judge below answers every axis from what the request carries, the way a real judge would, and
sometimes answers in ways the rubric's rules must overrule. The tests count requests at the server:
that is the only honest way to show a call was not paid for twice.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from ecap.store.schema import InstructionRow, Run, SampleFailure, VerdictRow
from ecap.testing import (
    FakeLLMServer,
    LLMRequest,
    count_api_calls,
    kill_run_when,
    query_store,
    run_spec,
)

pytest.importorskip("google.genai")
pytest.importorskip("openai")

PAIRS = 6
AXES = 3

# Each pair's instruction and reference. Pair 1's instruction uses a vague word ("slightly"),
# pair 2's judge will claim a hallucination, pair 3 covers one of its three primary changes.
ROWS = [
    ("Turn the red ball blue.", ["the ball turns blue"], [], "a recoloured ball"),
    ("Make the ball slightly bigger.", ["the ball is larger"], [], "a larger ball"),
    ("Add a cat on the left.", ["a dog appears on the right"], [], "a dog is added"),
    (
        "Remove the sun.",
        ["the sun is removed", "the sky turns grey", "the birds fly away"],
        ["the shadows fade"],
        "an overcast scene",
    ),
    ("Move the box to the right edge.", ["the box moves right"], [], "the box moved"),
    ("Make it night.", ["day becomes night"], ["lamps light up"], "a night scene"),
]


def write_pairs(folder: Path) -> Path:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "eval.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["source", "target", "instruction", "primary", "secondary", "overall"])
        for i, (instruction, primary, secondary, overall) in enumerate(ROWS):
            for side, blue in (("source", 40), ("target", 200)):
                Image.new("RGB", (16, 16), (i * 30, 90, blue)).save(images / f"{i}-{side}.png")
            writer.writerow(
                [
                    f"images/{i}-source.png",
                    f"images/{i}-target.png",
                    instruction,
                    json.dumps(primary),
                    json.dumps(secondary),
                    overall,
                ]
            )
    return path


def axis_of(request: LLMRequest) -> str:
    properties = json.dumps(request.schema or {}).lower()
    for marker, axis in (
        ("hallucination", "accuracy"),
        ("secondary_covered", "completeness"),
        ("forbidden_terms", "clarity"),
    ):
        if marker in properties:
            return axis
    raise AssertionError(f"cannot tell the axis of {request.text[:80]!r}")


def scripted_judge(request: LLMRequest) -> dict[str, Any]:
    """Answers as a diligent judge would, and always *claims* a 5: the rules must overrule it."""
    assert len(request.images) == 2, "every axis sees both images"
    text = request.text
    checks = [{"change": 1, "status": "hit"}]
    if "the sky turns grey" in text:
        checks += [{"change": 2, "status": "miss"}, {"change": 3, "status": "miss"}]
    axis = axis_of(request)
    if axis == "accuracy":
        return {
            "assertions": ["as stated"],
            "primary_changes": checks,
            "hallucination": "Add a cat" in text,
            "major_errors": 0,
            "minor_errors": 0,
            "score": 5,
            "reasoning": "scripted",
        }
    if axis == "completeness":
        return {
            "primary_changes": checks,
            "secondary_covered": "the shadows fade" in text,
            "score": 5,
            "reasoning": "scripted",
        }
    return {"forbidden_terms": ["slightly"], "score": 5, "reasoning": "scripted"}


# (accuracy, completeness, clarity) the rubric must give each pair whatever the judge claims.
EXPECTED = [
    (5.0, 5.0, 5.0),
    (5.0, 5.0, 3.0),  # one forbidden term: clarity ceiling 3.0
    (2.0, 5.0, 5.0),  # hallucination caps accuracy at 2
    (4.0, 2.5, 5.0),  # coverage 1/3: accuracy cap 4, completeness band 2 + 0.5 secondary bonus
    (5.0, 5.0, 5.0),
    (5.0, 5.0, 5.0),
]


def write_spec(folder: Path, server: FakeLLMServer, provider: str, **options: Any) -> Path:
    judge: dict[str, Any] = {
        "model": "gemini-2.5-pro" if provider == "gemini" else "gpt-4.1",
        "api_key": "${env:FAKE_LLM_KEY}",
        "base_url": server.url if provider == "gemini" else server.openai_base_url,
        "backoff": 0.01,
        "max_backoff": 0.05,
        "input_price": 1.25,
        "output_price": 10.0,
        **options,
    }
    spec = {
        "name": f"judge-{provider}",
        "store": f"sqlite:///{folder / 'ecap.db'}",
        "steps": {
            "eval": {"source": "csv", "with": {"path": "eval.csv"}},
            "judge": {"judge": provider, "from": "eval", "with": judge},
        },
    }
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    write_pairs(tmp_path)
    return tmp_path


def query(folder: Path, statement: Any) -> list[Any]:
    return query_store(folder / "ecap.db", statement)


def verdicts(folder: Path) -> list[VerdictRow]:
    return query(folder, select(VerdictRow).order_by(VerdictRow.id))


def api_calls(folder: Path, status: str) -> int:
    return count_api_calls(folder / "ecap.db", status)


def by_instruction(rows: list[VerdictRow], folder: Path) -> dict[str, VerdictRow]:
    texts = {row.id: row.text for row in query(folder, select(InstructionRow))}
    return {texts[row.instruction_id]: row for row in rows}


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_the_rubric_rules_hold_whatever_the_judge_claims(provider: str, workdir: Path) -> None:
    with FakeLLMServer(scripted_judge) as server:
        result = run_spec(write_spec(workdir, server, provider))
        assert result.status == "complete"
        assert server.count() == PAIRS * AXES

    rows = by_instruction(verdicts(workdir), workdir)
    assert len(rows) == PAIRS
    for (instruction, *_), expected in zip(ROWS, EXPECTED, strict=True):
        verdict = rows[instruction]
        axes = verdict.axes
        assert (axes["accuracy"], axes["completeness"], axes["clarity"]) == expected, instruction
        acc, comp, clar = expected
        assert verdict.weighted == pytest.approx(0.4 * acc + 0.4 * comp + 0.2 * clar)
        assert (
            verdict.judge == f"{provider}:{'gemini-2.5-pro' if provider == 'gemini' else 'gpt-4.1'}"
        )
        meta = verdict.meta
        assert meta["tokens_in"] > 0 and meta["tokens_out"] > 0
        assert meta["cost"] == pytest.approx(
            (meta["tokens_in"] * 1.25 + meta["tokens_out"] * 10.0) / 1e6, abs=1e-8
        )
    assert api_calls(workdir, "ok") == PAIRS * AXES


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_every_verdict_lands_once_after_a_fault_storm(provider: str, workdir: Path) -> None:
    with FakeLLMServer(scripted_judge) as server:
        # One of each failure the providers are known for, then more rate limiting.
        server.inject(429, retry_after=0.05)
        server.inject(500)
        server.inject(503)
        server.inject("slow", seconds=3.0)
        server.inject("truncated")
        server.inject("malformed")
        server.inject("disconnect")
        server.inject(429, retry_after=0.02, times=4)
        spec = write_spec(workdir, server, provider, timeout=1.0, max_concurrent_calls=4)
        result = run_spec(spec)
        assert result.status == "complete"
        assert not server.pending_faults and server.fault_count() == 11, "all faults served"
        sent = server.count()
        assert PAIRS * AXES <= sent <= PAIRS * AXES + 5  # garbled answers had to be asked again

        again = run_spec(spec)
        assert again.status == "complete"
        assert server.count() == sent, "a re-run pays for nothing"

    rows = verdicts(workdir)
    assert len(rows) == PAIRS
    assert len({row.instruction_id for row in rows}) == PAIRS
    assert api_calls(workdir, "ok") == PAIRS * AXES


def test_unparsable_answers_fail_their_sample_and_are_never_guessed(workdir: Path) -> None:
    def chatty_on_pair_4(request: LLMRequest) -> Any:
        if "Move the box" in request.text:
            return "I think this instruction is rather good, maybe a four?"
        return scripted_judge(request)

    with FakeLLMServer(chatty_on_pair_4) as server:
        result = run_spec(write_spec(workdir, server, "openai"), max_error_rate=0.5)
        assert result.status == "complete"
    rows = by_instruction(verdicts(workdir), workdir)
    assert "Move the box to the right edge." not in rows
    assert len(rows) == PAIRS - 1
    failures = query(workdir, select(SampleFailure))
    assert len(failures) == 1
    assert "UnparsableAnswer" in failures[0].error_type


def test_a_killed_judging_step_resumes_without_resending_finished_calls(workdir: Path) -> None:
    with FakeLLMServer(scripted_judge, latency=0.2) as server:
        spec = write_spec(workdir, server, "openai", max_concurrent_calls=2)
        kill_run_when(
            [sys.executable, "-m", "ecap.cli", "pipeline", "run", str(spec), "--no-progress"],
            lambda: server.count() >= 7,
            env={**os.environ, "FAKE_LLM_KEY": "sk-fake"},
        )
        assert server.count() < PAIRS * AXES, "killed half-way through"

        logged = api_calls(workdir, "ok")
        assert logged >= 5
        before = server.count()
        result = run_spec(spec)
        assert result.status == "complete"
        resent = server.count() - before

    assert resent == PAIRS * AXES - logged, "exactly the calls without a logged answer were sent"
    rows = verdicts(workdir)
    assert len(rows) == PAIRS
    assert len({row.instruction_id for row in rows}) == PAIRS


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_batch_mode_submits_once_waits_and_collects_at_half_price(
    provider: str, workdir: Path
) -> None:
    with FakeLLMServer(scripted_judge, batch_polls=2) as server:
        spec = write_spec(workdir, server, provider, batch=True, batch_poll_interval=0.01)
        first = run_spec(spec)
        assert first.status == "waiting"
        assert first.steps["judge"].status == "waiting"
        assert api_calls(workdir, "submitted") == PAIRS * AXES  # job ids stored before polling

        # Each later run (a restart, in real life hours later) polls the same job once: the
        # server reports it unfinished twice, then done.
        assert run_spec(spec).status == "waiting"
        assert run_spec(spec).status == "complete"
        assert server.count(kind="batch") == PAIRS * AXES, "one batch, never resubmitted"
        assert server.count() == 0, "no online calls"

    rows = by_instruction(verdicts(workdir), workdir)
    assert len(rows) == PAIRS
    for (instruction, *_), expected in zip(ROWS, EXPECTED, strict=True):
        axes = rows[instruction].axes
        assert (axes["accuracy"], axes["completeness"], axes["clarity"]) == expected
        meta = rows[instruction].meta
        assert meta["cost"] == pytest.approx(
            0.5 * (meta["tokens_in"] * 1.25 + meta["tokens_out"] * 10.0) / 1e6, abs=1e-8
        )


def test_a_key_typed_into_the_spec_is_used_but_never_stored(workdir: Path) -> None:
    with FakeLLMServer(scripted_judge, api_key="sk-typed-in-123") as server:
        spec = write_spec(workdir, server, "openai", api_key="sk-typed-in-123")
        assert run_spec(spec).status == "complete"
        assert server.count() == PAIRS * AXES  # the server accepted the key
    (spec_text,) = query(workdir, select(Run.spec_text))
    assert "sk-typed-in-123" not in spec_text
    assert '"api_key": ***' in spec_text
    assert "sk-typed-in-123" not in "".join(str(r.meta) for r in verdicts(workdir))
