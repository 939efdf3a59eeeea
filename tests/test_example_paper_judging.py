"""examples/paper/judge.yaml runs as shipped, with its endpoints pointed at a local fake server by
the environment variables a user would set, and ``ecap report`` turns it into the paper's table."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecap.store import Store
from ecap.store.schema import Run, VerdictRow
from ecap.testing import FakeLLMServer, LLMRequest, run_spec

pytest.importorskip("google.genai")
pytest.importorskip("openai")

EXAMPLES = Path(__file__).parent.parent / "examples"
JUDGES = ("judge_gemini", "judge_gpt", "judge_open")


SAMPLE = EXAMPLES / "paper" / "data" / "format-sample"
TERSE = {row["instruction"] for row in csv.DictReader((SAMPLE / "glm-4.5v.csv").open())}


def terse_is_worse(request: LLMRequest) -> dict[str, Any]:
    """Finds the sample's terse instructions only partly right; the detailed ones fully."""
    schema = json.dumps(request.schema or {})
    terse = any(text in request.text for text in TERSE)
    checks = [{"change": 1, "status": "partial" if terse else "hit"}]
    if "hallucination" in schema:
        return {
            "primary_changes": checks,
            "hallucination": False,
            "major_errors": 0,
            "minor_errors": 0,
            "score": 3 if terse else 5,
            "reasoning": "scripted",
        }
    if "secondary_covered" in schema:
        return {"primary_changes": checks, "secondary_covered": False, "score": 3, "reasoning": "-"}
    return {"forbidden_terms": [], "score": 3 if terse else 5, "reasoning": "scripted"}


@pytest.fixture
def paper(tmp_path: Path) -> Path:
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "paper", folder / "paper")
    shutil.copytree(EXAMPLES / "quickstart" / "data", folder / "quickstart" / "data")
    return folder / "paper" / "judge.yaml"


def test_the_paper_judging_spec_runs_against_endpoints_given_by_environment(
    paper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLLMServer(terse_is_worse) as server:
        for name, value in {
            "ECAP_STORE": f"sqlite:///{paper.parent / 'paper.db'}",
            "GEMINI_API_KEY": "fake-gemini-key",
            "GEMINI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": server.openai_base_url,
            "OPEN_JUDGE_URL": server.openai_base_url,
        }.items():
            monkeypatch.setenv(name, value)
        result = run_spec(paper)
        assert result.status == "complete"
        # 2 models x 6 pairs x 3 axes, for each of the three judges.
        assert server.count(provider="gemini") == 36
        assert server.count(provider="openai") == 72
        models = {call.model for call in server.calls}
        assert models == {"gemini-2.5-pro", "gpt-4.1", "Qwen/Qwen3-VL-32B-Instruct"}

    store = Store(f"sqlite:///{paper.parent / 'paper.db'}")
    try:
        with Session(store.engine) as session:
            judges = {v.judge for v in session.scalars(select(VerdictRow))}
            spec_text = session.scalars(select(Run.spec_text)).one()
    finally:
        store.close()
    assert judges == {
        "gemini:gemini-2.5-pro",
        "openai:gpt-4.1",
        "openai:Qwen/Qwen3-VL-32B-Instruct",
    }
    assert "fake-gemini-key" not in spec_text and "sk-fake" not in spec_text

    report = ["report", "--store", str(paper), "--judge", "gemini", "--resamples", "0", "--json"]
    table = subprocess.run(
        [sys.executable, "-m", "ecap.cli", *report],
        capture_output=True,
        text=True,
        check=True,
    )
    cells = json.loads(table.stdout)["scores"]
    by_model = {cell["model"]: cell for cell in cells}
    assert set(by_model) == {"glm-4.5v", "qwen3-vl-32b-sft-dpo"}
    assert all(cell["benchmark"] == "format-sample" and cell["n"] == 6 for cell in cells)
    assert by_model["qwen3-vl-32b-sft-dpo"]["S"]["mean"] > by_model["glm-4.5v"]["S"]["mean"]
