"""The runner: caching per sample, failures per sample, recomputing only what changed."""

from __future__ import annotations

import json
from pathlib import Path

from ecap.store import Store
from ecap.testing import FakeCaptioner, FakeFilter, FakeJudge, make_pairs, run_spec

PIPELINE = """
    name: t
    steps:
      pairs: {{source: csv, with: {{path: {csv}}}}}
      captions: {{caption: fake, from: pairs, with: {captioner}}}
      scored: {{filter: fake, from: captions, with: {filter}}}
      judged: {{judge: fake, from: scored, concurrency: 3, batch_size: 2}}
      out: {{export: jsonl, from: judged, with: {{path: out.jsonl}}}}
"""


def pipeline(write_spec, csv: Path, captioner: str = "{}", filter: str = "{}") -> Path:
    return write_spec(PIPELINE.format(csv=csv, captioner=captioner, filter=filter))


def test_first_run_computes_everything_and_second_run_serves_it_from_the_store(
    write_spec, ecap_registry, ecap_pairs, tmp_path
):
    spec = pipeline(write_spec, ecap_pairs)
    first = run_spec(spec)
    assert first.status == "complete"
    assert {s: o.counts["done"] for s, o in first.steps.items()} == {
        "pairs": 6,
        "captions": 6,
        "scored": 6,
        "judged": 6,
        "out": 6,
    }
    exported = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(exported) == 6 and all(row["verdict"] for row in exported)

    calls = (len(FakeCaptioner.calls), len(FakeFilter.calls), len(FakeJudge.calls))
    second = run_spec(spec)
    assert {o.status for o in second.steps.values()} == {"cached"}
    assert (len(FakeCaptioner.calls), len(FakeFilter.calls), len(FakeJudge.calls)) == calls


def test_changing_one_step_recomputes_it_and_its_dependants_only(
    write_spec, ecap_registry, ecap_pairs
):
    run_spec(pipeline(write_spec, ecap_pairs))
    FakeCaptioner.calls.clear()
    FakeFilter.calls.clear()
    FakeJudge.calls.clear()

    result = run_spec(pipeline(write_spec, ecap_pairs, filter="{default_score: 7}"))
    statuses = {s: o.status for s, o in result.steps.items()}
    assert statuses == {
        "pairs": "cached",
        "captions": "cached",
        "scored": "complete",
        "judged": "complete",
        "out": "complete",
    }
    assert FakeCaptioner.calls == []
    assert sum(map(len, FakeFilter.calls)) == 6
    assert sum(map(len, FakeJudge.calls)) == 6


def test_transport_and_threshold_settings_never_invalidate_results(
    write_spec, ecap_registry, ecap_pairs
):
    run_spec(pipeline(write_spec, ecap_pairs, filter="{replies: {color: '1'}}"))
    before = sum(map(len, FakeFilter.calls)) + sum(map(len, FakeCaptioner.calls))

    # A new threshold drops the 'color' pair downstream, but no score is recomputed.
    result = run_spec(
        pipeline(
            write_spec,
            ecap_pairs,
            captioner="{delay: 0.001}",
            filter="{replies: {color: '1'}, min_score: 2}",
        )
    )
    assert sum(map(len, FakeFilter.calls)) + sum(map(len, FakeCaptioner.calls)) == before
    assert result.steps["scored"].status == "cached"
    assert result.steps["scored"].counts["kept"] == 5
    assert result.steps["judged"].counts["inputs"] == 5


def test_a_corrupt_or_missing_image_fails_that_sample_only(write_spec, ecap_registry, tmp_path):
    from click.testing import CliRunner

    from ecap.cli import cli

    csv = make_pairs(tmp_path, 6, corrupt=(1,), missing=(4,))
    result = run_spec(pipeline(write_spec, csv))
    pairs = result.steps["pairs"]
    assert result.status == "complete"
    assert (pairs.counts["done"], pairs.counts["failed"]) == (4, 2)
    assert result.steps["out"].counts["inputs"] == 4

    shown = CliRunner().invoke(
        cli, ["runs", "show", "--json", "--store", str(tmp_path / "spec.yaml")]
    )
    assert shown.exit_code == 0, shown.output
    failures = json.loads(shown.output)["failures"]
    assert [(f["step_id"], f["error_type"]) for f in failures] == [
        ("pairs", "ImageError"),
        ("pairs", "ImageError"),
    ]
    assert "not a readable image" in failures[0]["message"]
    assert "cannot read image images/4-target.png" in failures[1]["message"]


def test_too_many_failures_fail_the_step_and_skip_its_dependants(
    write_spec, ecap_registry, ecap_pairs
):
    result = run_spec(
        pipeline(write_spec, ecap_pairs, captioner="{fail: [color, add, remove, move]}")
    )
    assert result.status == "failed"
    assert result.steps["captions"].status == "failed"
    assert "4 of 6 samples failed" in (result.steps["captions"].error or "")
    assert result.steps["scored"].status == "skipped"

    # Failed samples are retried by the next run; finished ones are not.
    FakeCaptioner.calls.clear()
    run_spec(pipeline(write_spec, ecap_pairs, captioner="{fail: [color, add, remove, move]}"))
    assert sum(map(len, FakeCaptioner.calls)) == 4


def test_a_rerun_judges_its_error_rate_over_every_sample_not_the_retried_ones(
    write_spec, ecap_registry, ecap_pairs
):
    """One sample of six fails for good: the first run completes (1/6 is within the budget),
    and so does the next one, which retries that sample alone and serves the other five."""
    spec = pipeline(write_spec, ecap_pairs, captioner="{fail: [color]}")
    assert run_spec(spec).steps["captions"].status == "complete"
    again = run_spec(spec).steps["captions"]
    assert (again.status, again.counts["cached"], again.counts["failed"]) == ("complete", 5, 1)


def test_a_batch_that_raises_is_retried(write_spec, ecap_registry, ecap_pairs):
    result = run_spec(pipeline(write_spec, ecap_pairs, captioner="{raise_first: 2}"))
    assert result.steps["captions"].counts == {
        "inputs": 6,
        "cached": 0,
        "done": 6,
        "failed": 0,
        "pending": 0,
    }
    assert len(FakeCaptioner.calls) == 3  # two failures, then success


def test_async_plugins_run_batches_concurrently(write_spec, ecap_registry, ecap_pairs):
    write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          judged: {{judge: fake, from: pairs, with: {{delay: 0.2}}, batch_size: 1,
                    concurrency: 4}}
    """)
    result = run_spec(Path(ecap_pairs).parent / "spec.yaml")
    assert result.steps["judged"].counts["done"] == 6
    assert FakeJudge.max_in_flight == 4


def test_limit_tries_a_spec_on_a_few_samples(write_spec, ecap_registry, ecap_pairs):
    result = run_spec(pipeline(write_spec, ecap_pairs), limit=2)
    assert [o.counts["inputs"] for o in result.steps.values()] == [2, 2, 2, 2, 2]


def test_the_same_pair_imported_twice_is_one_pair(write_spec, ecap_registry, ecap_pairs, tmp_path):
    (tmp_path / "again.csv").write_text(ecap_pairs.read_text())
    spec = write_spec(f"""
        steps:
          a: {{source: csv, with: {{path: {ecap_pairs}}}}}
          b: {{source: csv, with: {{path: {tmp_path / "again.csv"}}}}}
          both: {{caption: fake, from: [a, b]}}
    """)
    result = run_spec(spec)
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    from ecap.provenance import query

    assert len(query(store, record_type="pair", limit=100)) == 6
    # Items differ (each file has its own instruction), pairs do not.
    assert result.steps["both"].counts["inputs"] == 12


def test_human_steps_wait_and_a_later_run_imports_what_humans_finished(
    write_spec, ecap_registry, ecap_pairs, tmp_path
):
    from ecap.testing import FakeAnnotator

    answers = tmp_path / "answers.json"
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          captions: {{caption: fake, from: pairs}}
          refine: {{annotate: fake, from: captions, with: {{answers_file: {answers}}}}}
          judged: {{judge: fake, from: refine}}
    """)
    first = run_spec(spec)
    assert first.status == "waiting"
    assert first.steps["refine"].status == "waiting"
    assert first.steps["refine"].counts["pending"] == 6
    assert first.steps["judged"].status == "skipped"
    tasks = list(FakeAnnotator.pushed)
    assert len(tasks) == 6

    answers.write_text(json.dumps({tasks[0]: "Turn the ball blue.", tasks[1]: ""}))
    second = run_spec(spec)
    assert FakeAnnotator.pushed == tasks  # nothing pushed twice
    assert second.steps["refine"].counts == {
        "inputs": 6,
        "cached": 0,
        "done": 2,
        "failed": 0,
        "pending": 4,
    }

    answers.write_text(json.dumps({t: f"Human text {i}." for i, t in enumerate(tasks)}))
    third = run_spec(spec)
    assert third.status == "complete"
    assert third.steps["refine"].counts["cached"] == 2  # the skipped task stays finished
    assert third.steps["judged"].counts["done"] == 5
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    from ecap.provenance import query

    humans = query(store, origin="human", limit=100)
    assert len(humans) == 5 and all(h["parent_id"] for h in humans)


def test_duplicate_rows_are_one_sample_and_an_unreadable_source_fails_its_step_only(
    write_spec, ecap_registry, ecap_pairs, tmp_path
):
    lines = ecap_pairs.read_text().splitlines()
    ecap_pairs.write_text("\n".join([*lines, lines[1], lines[1]]) + "\n")
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          gone: {{source: csv, with: {{path: {tmp_path / "missing.csv"}}}}}
          captions: {{caption: fake, from: pairs}}
    """)
    result = run_spec(spec)
    assert result.steps["pairs"].counts["inputs"] == 6
    assert result.steps["gone"].status == "failed"
    assert "cannot read" in (result.steps["gone"].error or "")
    assert result.steps["captions"].counts["done"] == 6
    assert result.status == "failed"
