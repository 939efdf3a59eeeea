"""Test pairs never reach training, and training data can be frozen from the store by hand.

A pair's split is fixed for good: ``test`` when its source declares it (a benchmark, a ShapesEdit
test set), otherwise a hash of its id. The store remembers held-out pairs (declared ones and the
test side of every ``ecap dataset build``), and the runner refuses to train on any of them,
whichever step or run brings them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ecap.cli import cli
from ecap.datasets import balance_categories, hashed_split, split_of
from ecap.errors import EcapError
from ecap.records import ImageRef, Item, Pair
from ecap.testing import FakeTrainer, run_spec

IDS = [f"{i:064x}" for i in range(3000)]


def make_pair(index: int, *, category: str | None = None, split: str | None = None) -> Pair:
    ref = ImageRef(uri=f"/img/{index}.png", sha256=f"{index:064x}")
    other = ImageRef(uri=f"/img/{index}-t.png", sha256=f"{index + 10**6:064x}")
    return Pair.of(ref, other, category=category, meta={"split": split} if split else {})


def query(spec: Path, sql: str, **params: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(spec.parent / "ecap.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]


def ecap(*args: str) -> Any:
    """``ecap ARGS --json``'s answer, parsed."""
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def build(spec: Path, out: Path, *options: str, fmt: str = "jsonl") -> list[dict[str, Any]]:
    """``ecap dataset build`` of the spec's ``captions`` step into ``out``: one row per split."""
    return ecap(
        "dataset", "build", "--step", "captions", "--format", fmt, "-o", str(out),
        "--store", str(spec), *options,
    )  # fmt: skip


# -- the split of a pair ----------------------------------------------------------------------


def test_hashed_splits_take_their_share_and_never_move_when_the_other_fraction_changes():
    sides = [hashed_split(pid, 0.1, 0.2) for pid in IDS]
    assert abs(sides.count("validation") / len(IDS) - 0.1) < 0.03
    assert abs(sides.count("test") / len(IDS) - 0.2) < 0.03
    # Test pairs stay test whatever the validation fraction, and the other way round.
    test_before = {pid for pid in IDS if hashed_split(pid, 0.1, 0.2) == "test"}
    assert test_before == {pid for pid in IDS if hashed_split(pid, 0.3, 0.2) == "test"}
    validation = {pid for pid in IDS if hashed_split(pid, 0.1, 0.2) == "validation"}
    assert validation == {pid for pid in IDS if hashed_split(pid, 0.1, 0.05) == "validation"}


def test_fractions_that_leave_nothing_to_train_on_are_refused():
    with pytest.raises(EcapError, match="leave something for training"):
        hashed_split(IDS[0], 0.5, 0.5)


def test_a_split_declared_test_by_the_source_wins_over_the_hash():
    pairs = [make_pair(i, split="test") for i in range(50)]
    assert {split_of(p, validation_fraction=0.5) for p in pairs} == {"test"}
    # Other declared names (ShapesEdit's "prefer", a set's "train") leave the choice to the hash.
    assert {split_of(make_pair(i, split="prefer"), test_fraction=0.5) for i in range(50)} == {
        "train",
        "test",
    }


def test_balancing_keeps_as_many_of_each_category_as_the_smallest_has_and_is_stable():
    items = [Item(pair=make_pair(i, category="big")) for i in range(9)]
    items += [Item(pair=make_pair(100 + i, category="small")) for i in range(3)]
    kept = balance_categories(items)
    assert sorted(i.pair.category for i in kept) == ["big"] * 3 + ["small"] * 3
    assert [i.pair.id for i in balance_categories(list(reversed(items)))] == [
        i.pair.id for i in reversed(kept)
    ]
    assert len(balance_categories(items, per_category=5)) == 5 + 3


# -- no test pair reaches training ------------------------------------------------------------

SHAPES_SPEC = """
    name: leak
    steps:
      test_pairs: {{source: shapes, with: {{count: 4, seed: 0, split: test}}}}
      captions: {{caption: fake, from: test_pairs}}
      sft: {{train: fake, from: captions, with: {trainer}}}
"""


def test_a_train_step_given_pairs_its_source_declared_test_fails_before_training(
    write_spec, ecap_registry
):
    spec = write_spec(SHAPES_SPEC.format(trainer="{}"))
    result = run_spec(spec)
    assert result.status == "failed"
    error = result.steps["sft"].error or ""
    assert "would train on 4 of 4 pairs held out for testing" in error
    assert "declared split 'test' by its source (step 'test_pairs'" in error
    assert FakeTrainer.calls == []  # refused before the trainer saw anything
    assert query(spec, "SELECT count(*) AS n FROM models") == [{"n": 0}]


def test_leave_out_trains_without_held_out_pairs_and_counts_them(
    write_spec, ecap_registry, ecap_pairs
):
    spec = write_spec(
        f"""
        name: mixed
        steps:
          train_pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          test_pairs: {{source: shapes, with: {{count: 3, seed: 0, split: test}}}}
          captions: {{caption: fake, from: [train_pairs, test_pairs]}}
          sft: {{train: fake, from: captions, with: {{held_out: leave_out}}}}
        """
    )
    result = run_spec(spec)
    assert result.status == "complete", {s: o.error for s, o in result.steps.items()}
    assert len(FakeTrainer.calls) == 1 and len(FakeTrainer.calls[0]) == 6
    test_ids = {r["id"] for r in query(spec, "SELECT id FROM pairs WHERE meta LIKE '%shapes%'")}
    assert test_ids and not test_ids & set(FakeTrainer.calls[0])
    assert result.steps["sft"].counts["held_out"] == 3
    [dataset] = query(spec, "SELECT count FROM datasets")
    assert dataset["count"] == 6  # the frozen dataset is what trained, nothing more


# -- ecap dataset build -----------------------------------------------------------------------

CSV_SPEC = """
    name: build
    steps:
      pairs: {{source: csv, with: {{path: {csv}}}}}
      captions: {{caption: fake, from: pairs}}
      sft: {{train: fake, from: captions}}
"""


def test_dataset_build_writes_each_split_and_records_it_with_lineage(
    write_spec, ecap_registry, tmp_path
):
    from ecap.testing.helpers import make_pairs

    csv = make_pairs(tmp_path / "data", count=24)
    spec = write_spec(CSV_SPEC.format(csv=csv))
    head = spec.read_text().split("      sft:")[0]
    spec.write_text(head)  # first only the data: training comes after the build
    assert run_spec(spec).status == "complete"

    built = build(
        spec, tmp_path / "frozen", "--validation-fraction", "0.2", "--test-fraction", "0.3"
    )
    sides = {row["split"]: row for row in built}
    assert set(sides) == {"train", "validation", "test"}
    assert sum(s["count"] for s in sides.values()) == 24
    for split, side in sides.items():
        written = [json.loads(line) for line in Path(side["uri"]).read_text().splitlines()]
        assert len(written) == side["count"] and Path(side["uri"]).name == f"{split}.jsonl"
        # The split is a function of the pair id: the same as hashing it here.
        assert {hashed_split(r["pair_id"], 0.2, 0.3) for r in written} == {split}

    # Each split is a Dataset of its own, with a used edge to every pair it holds.
    listed = {d["split"]: d for d in ecap("dataset", "list", "--store", str(spec))}
    test = listed["test"]
    assert test["count"] == sides["test"]["count"] and test["name"] == "captions/test"
    assert query(
        spec,
        "SELECT count(*) AS n FROM edges WHERE src_id = :d AND dst_type = 'pair'",
        d=test["id"],
    ) == [{"n": test["count"]}]

    # From now on, a train step on those captions is refused: its test pairs are recorded.
    spec.write_text(CSV_SPEC.format(csv=csv))
    result = run_spec(spec)
    assert result.status == "failed"
    assert "test split of dataset 'captions/test'" in (result.steps["sft"].error or "")


def test_dataset_build_prefers_each_pairs_latest_human_instruction(
    write_spec, ecap_registry, ecap_pairs, tmp_path
):
    answers = tmp_path / "answers.json"
    spec = write_spec(
        f"""
        name: refine
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          captions: {{caption: fake, from: pairs}}
          refined: {{annotate: fake, from: captions, with: {{answers_file: {answers}}}}}
        """
    )
    answers.write_text("{}")
    run_spec(spec)  # tasks pushed, nobody answered yet
    tasks = [r["external_id"] for r in query(spec, "SELECT external_id FROM external_tasks")]
    answers.write_text(json.dumps({tasks[0]: "Make the sky purple, by a human."}))
    run_spec(spec)

    [train] = build(spec, tmp_path / "frozen")
    written = [json.loads(line) for line in Path(train["uri"]).read_text().splitlines()]
    texts = sorted(r["instruction"] for r in written)
    assert len(texts) == 6 and texts.count("Make the sky purple, by a human.") == 1
    assert sum(r["instruction_origin"] == "human" for r in written) == 1


def test_pairs_a_benchmark_declares_test_land_in_the_test_split_of_trl_rows(
    write_spec, ecap_registry, tmp_path
):
    spec = write_spec(
        """
        name: trl-rows
        steps:
          train_pairs: {source: shapes, with: {count: 4, seed: 0, split: train}}
          test_pairs: {source: shapes, with: {count: 2, seed: 0, split: test}}
          captions: {caption: fake, from: [train_pairs, test_pairs]}
        """
    )
    assert run_spec(spec).status == "complete"
    out = tmp_path / "frozen"
    sides = build(spec, out, fmt="sft")
    counts = {side["split"]: side["count"] for side in sides}
    assert counts == {"train": 4, "test": 2}
    test_rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert {row["split"] for row in test_rows} == {"test"}  # the column agrees with the file
    assert all(len(row["images"]) == 2 and row["messages"] for row in test_rows)
