"""Models flow between steps: a train step's Model is what ``{step: NAME}`` names downstream.

Through the fake trainer and captioner (``ecap.testing``), so the runner's train path and the
model references are tested without any real training.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ecap.errors import SpecError
from ecap.spec import load_spec
from ecap.testing import FakeCaptioner, FakeTrainer, run_spec

SPEC = """
    name: flow
    steps:
      pairs: {{source: csv, with: {{path: {csv}}}}}
      refined: {{caption: fake, from: pairs, with: {{template: "Refine {{category}}."}}}}
      sft: {{train: fake, from: refined, with: {trainer}}}
      test: {{source: csv, with: {{path: {csv}}}}}
      sampled: {{caption: fake, from: test, with: {{model: {{step: sft}}}}}}
"""


def flow(write_spec, csv: Path, trainer: str = "{}") -> Path:
    return write_spec(SPEC.format(csv=csv, trainer=trainer))


def query_store(spec: Path, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of the spec's store (``ecap.db`` beside it), as dicts."""
    with sqlite3.connect(spec.parent / "ecap.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]


def test_a_caption_step_uses_the_model_its_train_step_made(write_spec, ecap_registry, ecap_pairs):
    spec = flow(write_spec, ecap_pairs)
    result = run_spec(spec)
    assert result.status == "complete", {s: o.error for s, o in result.steps.items()}
    assert len(FakeTrainer.calls) == 1 and len(FakeTrainer.calls[0]) == 6

    [model] = query_store(spec, "SELECT id, uri, dataset_id FROM models")
    trained_rows = json.loads((Path(model["uri"]) / "rows.json").read_text())
    assert sorted(r["text"] for r in trained_rows)[0].startswith("Refine ")
    # Checkpoints live in the step's own work folder, never in the spec's folder itself.
    assert ".ecap/work/sft/" in Path(model["uri"]).as_posix()

    sampled = query_store(spec, "SELECT id, author FROM instructions WHERE author LIKE 'fake:%'")
    assert len(sampled) == 6 and {s["author"] for s in sampled} == {f"fake:{model['uri']}"}
    # Every instruction the trained model wrote leads back to the Model record ...
    edges = query_store(
        spec,
        "SELECT src_id FROM edges WHERE verb = 'wasAttributedTo' AND dst_id = :model",
        model=model["id"],
    )
    assert {e["src_id"] for e in edges} == {s["id"] for s in sampled}
    # ... and the model to the dataset it was trained on.
    assert query_store(
        spec,
        "SELECT count(*) AS n FROM edges WHERE src_id = :model AND verb = 'used' AND dst_id = :d",
        model=model["id"],
        d=model["dataset_id"],
    ) == [{"n": 1}]
    # Training metrics are stored with the step run.
    assert query_store(spec, "SELECT step FROM metrics") == [{"step": 1}]


def test_a_second_run_serves_the_model_and_its_samples_from_the_store(
    write_spec, ecap_registry, ecap_pairs
):
    spec = flow(write_spec, ecap_pairs)
    run_spec(spec)
    calls = (len(FakeTrainer.calls), len(FakeCaptioner.calls))
    again = run_spec(spec)
    assert {s: o.status for s, o in again.steps.items()} == dict.fromkeys(
        ["pairs", "refined", "sft", "test", "sampled"], "cached"
    )
    assert (len(FakeTrainer.calls), len(FakeCaptioner.calls)) == calls


def test_retraining_recomputes_what_the_new_model_writes_and_nothing_before(
    write_spec, ecap_registry, ecap_pairs
):
    run_spec(flow(write_spec, ecap_pairs))
    spec = flow(write_spec, ecap_pairs, trainer="{base_model: other-base}")
    result = run_spec(spec)
    statuses = {s: o.status for s, o in result.steps.items()}
    # A new config trains in a new folder: it never resumes from the old config's checkpoints.
    folders = {m["uri"] for m in query_store(spec, "SELECT uri FROM models")}
    assert len(folders) == 2
    assert statuses == {
        "pairs": "cached",
        "refined": "cached",
        "sft": "complete",
        "test": "cached",
        "sampled": "complete",
    }


def test_a_failed_training_skips_the_steps_that_need_its_model(
    write_spec, ecap_registry, ecap_pairs
):
    result = run_spec(flow(write_spec, ecap_pairs, trainer="{fail: true}"))
    assert result.steps["sft"].status == "failed"
    assert result.steps["sampled"].status == "skipped"
    assert "sft" in (result.steps["sampled"].error or "")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{step: sfft}", "unknown step 'sfft' — did you mean 'sft'?"),
        ("{step: pairs}", "step 'pairs' is a source step and makes no model"),
    ],
)
def test_a_model_reference_must_name_a_train_step(
    write_spec, ecap_registry, ecap_pairs, reference, message
):
    spec = write_spec(SPEC.format(csv=ecap_pairs, trainer="{}").replace("{step: sft}", reference))
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    assert message in str(error.value)
    assert "steps.sampled.with.model.step" in str(error.value)


def test_a_trainings_bar_shows_its_latest_step_loss_and_speed():
    from ecap.progress import metrics_line

    line = metrics_line(120, {"loss": 0.53219, "tokens_per_second": 1234.4, "learning_rate": 1e-5})
    assert line == "step 120 · loss 0.5322 · 1,234 tok/s"
    dpo = metrics_line(8, {"loss": 0.69, "rewards/margins": 0.0123, "rewards/accuracies": 0.75})
    assert dpo == "step 8 · loss 0.69 · margin 0.0123 · acc 0.75"
