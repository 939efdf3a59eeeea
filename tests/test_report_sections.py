"""The report sections plugins and the core add beside the judge tables: filters (kept, dropped,
keep rate per rule, score histograms, dropped examples), training curves, and failure modes.

Each test runs a real spec into a store and reads ``ecap report`` back as JSON and Markdown, with
exact numbers; the HTML page must carry the charts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ecap.plugins import Registry
from ecap.report.command import report_command
from ecap.store import Store
from ecap.testing import run_spec

#: Instructions of the six pairs ``ecap_pairs`` writes (categories color, add, remove, move,
#: style, global), chosen so that each heuristic part drops something.
INSTRUCTIONS = [
    "Make the red circle blue.",  # kept
    "Adjust the image.",  # too short (3 words < 4) and a vague verb
    "Remove the small green square.",  # kept
    "Make the red circle blue.",  # a duplicate of pair 0
    "Put it back as in the second image.",  # leaks the target
    "Turn the background yellow.",  # kept
]
#: The fake filter's score per category: kept at 5 or more.
FAKE_SCORES = {"color": 9, "add": 2, "remove": 7.5, "move": 4, "style": 6, "global": 1}


def report(store: Path, *args: str) -> Any:
    """``ecap report --json`` over the store, parsed."""
    result = CliRunner().invoke(report_command, ["--store", str(store), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def markdown(store: Path, *args: str) -> str:
    result = CliRunner().invoke(report_command, ["--store", str(store), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def html_page(store: Path, tmp_path: Path) -> str:
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        report_command, ["--store", str(store), "--format", "html", "-o", str(page)]
    )
    assert result.exit_code == 0, result.output
    return page.read_text()


# -- filters ---------------------------------------------------------------------------------


@pytest.fixture
def filtered(
    ecap_registry: Registry, ecap_pairs: Path, write_spec: Callable[[str], Path], tmp_path: Path
) -> Path:
    """A store where the heuristics filter and the fake filter each decided the six pairs."""
    with ecap_pairs.open() as f:
        rows = list(csv.DictReader(f))
    for row, text in zip(rows, INSTRUCTIONS, strict=True):
        row["instruction"] = text
    with ecap_pairs.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    replies = ", ".join(f'{c}: "{s}"' for c, s in FAKE_SCORES.items())
    spec = write_spec(
        f"""
        name: filters
        steps:
          pairs:
            source: csv
            with: {{path: {ecap_pairs.name}}}
          checked:
            filter: heuristics
            from: pairs
            with: {{checks: [vague_terms, length, leak], min_words: 4}}
          scored:
            filter: fake
            from: pairs
            with: {{replies: {{{replies}}}, min_score: 5}}
        """
    )
    result = run_spec(spec)
    assert result.status == "complete", {k: v.error for k, v in result.steps.items()}
    return tmp_path / "ecap.db"


def test_filter_steps_count_kept_and_dropped_rows(filtered: Path) -> None:
    data = report(filtered)
    assert data["filter_steps"] == [
        {
            "step": "checked",
            "plugin": "heuristics",
            "n": 6,
            "kept": 3.0,
            "dropped": 3.0,
            "keep_rate": 50.0,
            "failed": 0.0,
        },
        {
            "step": "scored",
            "plugin": "fake",
            "n": 6,
            "kept": 3.0,
            "dropped": 3.0,
            "keep_rate": 50.0,
            "failed": 0.0,
        },
    ]


def test_keep_rate_per_rule_splits_the_heuristic_flags(filtered: Path) -> None:
    rules = {r["rule"]: (r["kept"], r["dropped"]) for r in report(filtered)["filter_rules"]}
    assert rules == {
        "{unflagged: [vague_terms]}": (4.0, 2.0),  # 'adjust' and the vague reference 'it'
        "{unflagged: [too_short]}": (5.0, 1.0),
        "{unflagged: [too_long]}": (6.0, 0.0),
        "{unflagged: [leak]}": (5.0, 1.0),
        "{unique: text_hash}": (5.0, 1.0),
    }


def test_dropped_examples_say_why(filtered: Path) -> None:
    dropped = [r for r in report(filtered)["filter_dropped"] if r["step"] == "checked"]
    reasons = {r["instruction"]: r["reason"] for r in dropped}
    assert set(reasons) == {
        "Adjust the image.",
        "Make the red circle blue.",
        "Put it back as in the second image.",
    }
    assert (
        reasons["Adjust the image."] == "vague_terms: vague verb 'adjust'; too_short: 3 words < 4"
    )
    assert reasons["Make the red circle blue."].startswith("duplicate (text_hash) of ")
    assert "leak: points at the other image" in reasons["Put it back as in the second image."]
    scored = [r for r in report(filtered)["filter_dropped"] if r["step"] == "scored"]
    assert sorted(r["category"] for r in scored) == ["add", "global", "move"]


def test_score_histograms_count_each_category_per_bin(filtered: Path) -> None:
    rows = report(filtered)["filter_histograms"]
    assert {r["step"] for r in rows} == {"scored"}  # the heuristics' flags are no histogram
    filled = {(r["bin"], r["category"]): r["n"] for r in rows if r["n"]}
    # scores 1..9 in ten bins of 0.8: the last bin holds 9
    assert filled == {
        ("[1, 1.8)", "global"): 1,
        ("[1.8, 2.6)", "add"): 1,
        ("[3.4, 4.2)", "move"): 1,
        ("[5.8, 6.6)", "style"): 1,
        ("[7.4, 8.2)", "remove"): 1,
        ("[8.2, 9]", "color"): 1,
    }
    assert len(rows) == 10 * 6
    assert all(r["share"] == 100.0 * r["n"] for r in rows)  # one row per category


def test_filter_section_in_markdown_and_html(filtered: Path, tmp_path: Path) -> None:
    text = markdown(filtered)
    assert "| checked | heuristics | 3 | 3 | 50.0% | 0 | 6 |" in text
    assert "| scored | score | [8.2, 9] | 0.0% | 0 | 100.0% | 1 |" in text
    page = html_page(filtered, tmp_path)
    assert "<h2>Score histograms</h2>" in page
    assert page.count('src="data:image/png;base64,') == 1  # the histogram chart


def test_runs_show_says_what_each_filter_step_kept_and_dropped(filtered: Path) -> None:
    from ecap.cli import cli

    result = CliRunner().invoke(cli, ["runs", "show", "--store", str(filtered)])
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines()]
    samples = {row[0]: row[3] for row in cells if len(row) == 5}
    assert samples == {
        "pairs": "6/6 done",
        "checked": "6/6 done, 3 kept, 3 dropped",
        "scored": "6/6 done, 3 kept, 3 dropped",
    }


# -- training --------------------------------------------------------------------------------


@pytest.fixture
def trained(
    ecap_registry: Registry, ecap_pairs: Path, write_spec: Callable[[str], Path], tmp_path: Path
) -> Path:
    """A store with two fake trainings, ``sft`` and ``dpo``, each of which logged its loss at
    step 1 (the fake logs its row count, 6); later logging steps are added as TRL's callback
    reports them (``tokens_per_second``; a DPO's ``rewards/margins`` and ``rewards/accuracies``)."""
    spec = write_spec(
        f"""
        name: training
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs.name}}}}}
          refined: {{caption: fake, from: pairs}}
          sft: {{train: fake, from: refined}}
          dpo: {{train: fake, from: refined, with: {{base_model: other-base}}}}
        """
    )
    result = run_spec(spec)
    assert result.status == "complete", {k: v.error for k, v in result.steps.items()}
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    try:
        later = {
            "sft": [
                (2, {"loss": 4.0, "tokens_per_second": 100.0, "learning_rate": 1e-5}),
                (3, {"loss": 4.5, "tokens_per_second": 200.0}),
            ],
            "dpo": [
                (2, {"loss": 0.69, "rewards/margins": 0.1, "rewards/accuracies": 0.5}),
                (3, {"loss": 0.5, "rewards/margins": 0.4, "rewards/accuracies": 0.75}),
                (3, {"train_loss": 0.6, "train_runtime": 2.0}),  # the end-of-training summary
            ],
        }
        for step, rows in later.items():
            step_run = store.latest_step_run(step)
            assert step_run is not None
            for logging_step, values in rows:
                store.save_metrics(step_run["id"], logging_step, values)
    finally:
        store.close()
    return tmp_path / "ecap.db"


def test_training_table_has_final_and_lowest_loss_and_dpo_margins(trained: Path) -> None:
    rows = {r["step"]: r for r in report(trained)["training"]}
    sft, dpo = rows["sft"], rows["dpo"]
    assert (sft["plugin"], sft["n"]) == ("fake", 3)
    assert (sft["final_loss"], sft["min_loss"], sft["steps"]) == (4.5, 4.0, 3.0)
    assert sft["tokens_per_second"] == 150.0
    assert sft["margin"] is None and sft["accuracy"] is None
    assert (dpo["final_loss"], dpo["min_loss"], dpo["steps"], dpo["n"]) == (0.5, 0.5, 3.0, 4)
    assert (dpo["margin"], dpo["accuracy"]) == (0.4, 75.0)
    assert dpo["tokens_per_second"] is None


def test_training_curves_are_drawn_in_html_and_listed_in_json_only(
    trained: Path, tmp_path: Path
) -> None:
    curves = report(trained)["training_curves"]
    assert [(r["step"], r["log_step"], r["loss"], r["margin"]) for r in curves] == [
        ("dpo", "1", 6.0, None),
        ("dpo", "2", 0.69, 0.1),
        ("dpo", "3", 0.5, 0.4),
        ("sft", "1", 6.0, None),
        ("sft", "2", 4.0, None),
        ("sft", "3", 4.5, None),
    ]
    text = markdown(trained)
    assert "## Training\n" in text and "## Training curves" not in text
    assert "| 0.5000 | 0.5000 | 3 | - | 0.4000 | 75.0% | 4 |" in text
    page = html_page(trained, tmp_path)
    assert "<h2>Training curves</h2>" in page
    assert page.count('src="data:image/png;base64,') == 1  # loss and margin, one figure
    assert "Logging step" not in page  # the curve's points are drawn, not listed


# -- failure modes ---------------------------------------------------------------------------

SHAPES = {"count": 6, "seed": 1, "split": "test", "operations": ["move", "zoom"], "image_size": 48}
FLIPS = {"left": "right", "right": "left", "up": "down", "down": "up"}


def canonical_instructions(folder: Path) -> dict[str, tuple[str, str]]:
    """pair id -> (operation, canonical instruction) of the pairs the ``shapes`` step makes."""
    from ecap.interfaces import PluginContext
    from ecap_shapes.source import CHANGES, ShapesConfig, ShapesSource

    context = PluginContext(step_id="pairs", base_dir=folder, work_dir=folder)
    source = ShapesSource(ShapesConfig(include_instruction=True, **SHAPES), context)
    found = {}
    for loaded in source.load(list(source.rows())):
        assert isinstance(loaded, list)
        for item in loaded:
            assert item.instruction is not None and item.reference is not None
            found[item.pair.id] = (item.reference.meta[CHANGES][0], item.instruction.text)
    return {pair: (change["operation"], text) for pair, (change, text) in found.items()}


def mistaken(change: str, text: str) -> str:
    """The instruction with its direction flipped (a move) or its zoom reversed."""
    if change == "zoom":
        return (
            text.replace("Zoom in", "Zoom out")
            if "Zoom in" in text
            else text.replace("Zoom out", "Zoom in")
        )
    for word, flip in FLIPS.items():
        if f" {word} " in text:
            return text.replace(f" {word} ", f" {flip} ")
    raise AssertionError(f"no direction in {text!r}")


@pytest.fixture
def judged(
    ecap_registry: Registry, write_spec: Callable[[str], Path], tmp_path: Path
) -> tuple[Path, dict[str, tuple[str, str]]]:
    """ShapesEdit pairs judged twice by ``shapes-rules``: their canonical instructions (author
    ``shapes``), and a fake captioner's copies with every direction and zoom reversed except the
    first pair's (author ``fake``)."""
    pairs = canonical_instructions(tmp_path / "probe")
    replies = {
        pair: text if pair == min(pairs) else mistaken(op, text)
        for pair, (op, text) in pairs.items()
    }
    spec = write_spec(
        f"""
        name: failures
        steps:
          pairs:
            source: shapes
            with: {json.dumps({**SHAPES, "include_instruction": True})}
          reference_judged: {{judge: shapes-rules, from: pairs}}
          captions:
            caption: fake
            from: pairs
            with: {{replies: {json.dumps(replies)}}}
          caption_judged: {{judge: shapes-rules, from: captions}}
        """
    )
    result = run_spec(spec)
    assert result.status == "complete", {k: v.error for k, v in result.steps.items()}
    return tmp_path / "ecap.db", pairs


def test_failure_modes_rate_orientation_and_viewpoint_errors_per_model(
    judged: tuple[Path, dict[str, tuple[str, str]]],
) -> None:
    store, pairs = judged
    reversed_ops = [op for pair, (op, _) in pairs.items() if pair != min(pairs)]
    moves, zooms = reversed_ops.count("move"), reversed_ops.count("zoom")
    assert moves and zooms  # the seed reverses both kinds
    rows = {(r["step"], r["model"]): r for r in report(store)["failure_modes"]}
    assert set(rows) == {("caption_judged", "fake"), ("reference_judged", "shapes")}
    reference, captions = rows["reference_judged", "shapes"], rows["caption_judged", "fake"]
    assert reference["n"] == captions["n"] == 6
    assert reference["S"]["mean"] == 5.0
    assert reference["orientation_error"]["mean"] == reference["viewpoint_error"]["mean"] == 0.0
    assert captions["orientation_error"]["mean"] == pytest.approx(100.0 * moves / 6)
    assert captions["viewpoint_error"]["mean"] == pytest.approx(100.0 * zooms / 6)
    assert captions["S"]["mean"] < 5.0


def test_failure_modes_s_is_the_mean_of_the_stored_verdicts_and_shown_in_markdown(
    judged: tuple[Path, dict[str, tuple[str, str]]],
) -> None:
    from sqlalchemy import select

    from ecap.store.schema import InstructionRow, VerdictRow
    from ecap.testing import query_store

    store, _ = judged
    authors = {row.id: row.author for row in query_store(store, select(InstructionRow))}
    fake_scores = [
        v.weighted
        for v in query_store(store, select(VerdictRow))
        if authors[v.instruction_id] == "fake"
    ]
    (captions,) = [r for r in report(store)["failure_modes"] if r["model"] == "fake"]
    assert captions["S"]["mean"] == pytest.approx(sum(fake_scores) / len(fake_scores))
    text = markdown(store)
    assert "## Failure modes" in text
    header = next(line for line in text.splitlines() if line.startswith("| Judge step"))
    assert header.startswith("| Judge step | Model | S | Orientation error | Viewpoint error |")


def test_a_local_checkpoint_is_named_by_the_step_that_sampled_it() -> None:
    from ecap.report.query import model_label

    checkpoint = "/work/.ecap/work/sft/0a1b/model#sha256:99076a80b381b739bcf655a0476f"
    assert model_label(checkpoint, "test_sft") == "test_sft (#99076a80)"
    assert model_label("Qwen/Qwen3-VL-8B-Instruct@abc123", "captions") == (
        "Qwen/Qwen3-VL-8B-Instruct@abc123"
    )
    assert model_label(None, "captions") == "captions"
