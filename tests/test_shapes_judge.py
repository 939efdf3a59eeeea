"""The ``shapes-rules`` judge: the paper's rubric by rules, against exact ShapesEdit references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecap.interfaces import PluginContext
from ecap.records import Instruction, Item, Pair, Reference, SampleError, Verdict
from ecap.rubric import (
    AccuracyAnswer,
    ClarityAnswer,
    CompletenessAnswer,
    Scoring,
    accuracy_score,
    clarity_score,
    completeness_score,
)
from ecap_judges.prompts import default_rubric
from ecap_shapes.grammar import parse
from ecap_shapes.judge import ShapesRulesConfig, ShapesRulesJudge
from ecap_shapes.operations import OPERATIONS
from ecap_shapes.source import CHANGES, ShapesConfig, ShapesSource

FULL_MARKS = {"accuracy": 5.0, "completeness": 5.0, "clarity": 5.0}


def items(folder: Path, **config: Any) -> list[Item]:
    """Source items with their canonical instruction."""
    context = PluginContext(step_id="pairs", base_dir=folder, work_dir=folder)
    source = ShapesSource(ShapesConfig(include_instruction=True, image_size=48, **config), context)
    return [i for r in source.load(list(source.rows())) if isinstance(r, list) for i in r]


def one(folder: Path, operation: str, seed: int = 0, **config: Any) -> Item:
    [item] = items(folder, count=1, seed=seed, operations=[operation], **config)
    return item


def judge(item: Item, text: str | None = None, **config: Any) -> Verdict:
    if text is not None:
        item = item.model_copy(
            update={"instruction": Instruction(pair_id=item.pair.id, text=text, origin="model")}
        )
    context = PluginContext(step_id="judged", base_dir=Path("."), work_dir=Path("."))
    [verdict] = ShapesRulesJudge(ShapesRulesConfig(**config), context).judge([item])
    assert isinstance(verdict, Verdict)
    return verdict


def canonical(item: Item) -> str:
    assert item.instruction is not None
    return item.instruction.text


def change(item: Item) -> dict[str, Any]:
    assert item.reference is not None
    return item.reference.meta[CHANGES][0]


# -- full marks for what the reference says --------------------------------------------------------


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_the_canonical_instruction_of_every_operation_gets_full_marks(
    tmp_path: Path, operation: str
) -> None:
    for item in items(tmp_path, count=4, operations=[operation]):
        verdict = judge(item)
        assert verdict.axes == FULL_MARKS, (canonical(item), verdict.reasons)
        assert verdict.weighted == 5.0 and verdict.labels == []


def test_canonical_instructions_of_pairs_with_several_changes_get_full_marks(
    tmp_path: Path,
) -> None:
    for item in items(tmp_path, count=40, min_changes=2, max_changes=3, secondary_changes=1):
        verdict = judge(item)
        assert verdict.weighted == 5.0, (canonical(item), verdict.reasons)


def test_phrasing_case_and_synonyms_do_not_matter(tmp_path: Path) -> None:
    moved = one(tmp_path, "move", seed=1)
    who, where, share = change(moved)["object"], change(moved)["direction"], change(moved)["amount"]
    name = f"{who['colour']} {who['shape']}"
    towards = {"left": "leftwards", "right": "rightwards", "up": "upwards", "down": "downwards"}
    for text in (
        f"MOVE THE {name.upper()} {where.upper()} BY {share * 100:.0f}% OF THE IMAGE WIDTH.",
        f"Shift the {name} {towards[where]} by about {share * 100:.0f} percent of the frame.",
        f"The {name} should slide {where}, by roughly {share * 100:.0f}% of the picture.",
    ):
        assert judge(moved, text).weighted == 5.0, text


def test_rotation_and_size_synonyms(tmp_path: Path) -> None:
    turned = one(tmp_path, "rotate", seed=2)
    info = change(turned)
    name = f"{info['object']['colour']} {info['object']['shape']}"
    way = "anti-clockwise" if info["direction"] == "counterclockwise" else "clockwise"
    assert judge(turned, f"Turn the {name} {way} by {info['amount']:g}°.").weighted == 5.0


# -- failure modes -----------------------------------------------------------------------------


FLIPS = {"left": "right", "right": "left", "up": "down", "down": "up"}


def flipped(text: str, direction: str) -> str:
    return text.replace(f" {direction} ", f" {FLIPS[direction]} ")


def test_a_flipped_move_is_an_orientation_error_and_a_miss(tmp_path: Path) -> None:
    for seed in range(4):
        moved = one(tmp_path, "move", seed=seed)
        verdict = judge(moved, flipped(canonical(moved), change(moved)["direction"]))
        assert "orientation_error" in verdict.labels
        assert verdict.axes["completeness"] == 1.0  # a reversed direction is a miss
        assert verdict.axes["accuracy"] <= 3.0  # one major error
        assert verdict.weighted is not None and verdict.weighted < 3.0


def test_a_flipped_rotation_is_an_orientation_error(tmp_path: Path) -> None:
    turned = one(tmp_path, "rotate")
    text = canonical(turned)
    swapped = (
        text.replace("counterclockwise", "clockwise")
        if "counterclockwise" in text
        else text.replace("clockwise", "counterclockwise")
    )
    assert "orientation_error" in judge(turned, swapped).labels


def test_zoom_in_for_zoom_out_is_a_viewpoint_error(tmp_path: Path) -> None:
    for seed in range(4):
        zoomed = one(tmp_path, "zoom", seed=seed)
        text = canonical(zoomed)
        other = (
            text.replace("Zoom in", "Zoom out")
            if "Zoom in" in text
            else text.replace("Zoom out", "Zoom in")
        )
        verdict = judge(zoomed, other)
        assert "viewpoint_error" in verdict.labels
        assert "orientation_error" not in verdict.labels
        assert verdict.axes["completeness"] == 1.0


def test_a_pan_told_the_wrong_way_or_as_a_zoom_is_a_viewpoint_error(tmp_path: Path) -> None:
    panned = one(tmp_path, "pan")
    direction = change(panned)["direction"]
    assert "viewpoint_error" in judge(panned, flipped(canonical(panned), direction)).labels
    assert "viewpoint_error" in judge(panned, "Zoom in by a factor of 1.5.").labels
    moved_everything = f"Move everything {FLIPS[direction]}."
    assert "viewpoint_error" in judge(panned, moved_everything).labels


def test_an_edit_nobody_made_caps_accuracy_at_2(tmp_path: Path) -> None:
    moved = one(tmp_path, "move")
    verdict = judge(moved, canonical(moved) + " Add a large black hexagon in the centre.")
    assert "hallucination" in verdict.labels
    assert verdict.axes["accuracy"] == 2.0
    assert verdict.axes["completeness"] == 5.0  # the real change is still covered


def test_naming_the_wrong_object_is_tagged_and_scores_lowest(tmp_path: Path) -> None:
    moved = one(tmp_path, "move", min_objects=4, max_objects=4)
    assert moved.reference is not None
    who = change(moved)["object"]
    other = next(
        o for o in moved.reference.meta["scene"]["objects"] if o["colour"] != who["colour"]
    )
    text = canonical(moved).replace(
        f"{who['colour']} {who['shape']}", f"{other['colour']} {other['shape']}"
    )
    verdict = judge(moved, text)
    assert "wrong_object" in verdict.labels
    assert verdict.axes["accuracy"] == 1.0


def test_an_object_named_without_the_attribute_that_tells_it_apart_is_a_missing_attribute(
    tmp_path: Path,
) -> None:
    for seed in range(40):  # a scene where another object shares the moved one's shape
        moved = one(tmp_path, "move", seed=seed, distractor_similarity=1.0)
        assert moved.reference is not None
        who = change(moved)["object"]
        shapes = [o["shape"] for o in moved.reference.meta["scene"]["objects"]]
        if shapes.count(who["shape"]) > 1:
            break
    else:
        pytest.fail("no scene with two objects of the same shape")
    text = canonical(moved).replace(f"{who['colour']} {who['shape']}", who["shape"])
    verdict = judge(moved, text)
    assert "missing_attribute" in verdict.labels
    assert verdict.axes["clarity"] == 3.0  # key attribute missing
    assert verdict.axes["accuracy"] == 5.0  # nothing false was said


@pytest.mark.parametrize(
    ("added", "ceiling"),
    [(" slightly", 3.0), (" slightly, a bit", 2.5), (" slightly, a bit, somewhat", 2.0)],
)
def test_vague_terms_hit_the_clarity_ceilings(tmp_path: Path, added: str, ceiling: float) -> None:
    moved = one(tmp_path, "move")
    text = canonical(moved).rstrip(".") + added + "."
    verdict = judge(moved, text)
    assert verdict.axes["clarity"] == ceiling
    assert "vague_terms" in verdict.labels


def test_a_pronoun_counts_as_a_vague_reference(tmp_path: Path) -> None:
    moved = one(tmp_path, "move")
    who, where, share = change(moved)["object"], change(moved)["direction"], change(moved)["amount"]
    text = f"Select the {who['colour']} {who['shape']} and move it {where} by {share * 100:.0f}%."
    verdict = judge(moved, text)
    assert verdict.axes["clarity"] == 3.0  # "it" is one vague term
    assert verdict.axes["completeness"] == 5.0  # and still names the moved object


def test_a_replacement_told_as_removal_and_addition_is_covered(tmp_path: Path) -> None:
    replaced = one(tmp_path, "replace")
    info = change(replaced)
    old, new = info["object"], info["new_object"]
    text = f"Remove the {old['colour']} {old['shape']}; add a {new['colour']} {new['shape']}."
    assert judge(replaced, text).axes["completeness"] == 5.0


def test_a_wrong_amount_is_a_minor_error(tmp_path: Path) -> None:
    turned = one(tmp_path, "rotate", seed=3)
    info = change(turned)
    text = canonical(turned).replace(f" {info['amount']:g} degrees", " 170 degrees")
    verdict = judge(turned, text)
    assert "wrong_amount" in verdict.labels
    assert verdict.axes["accuracy"] == 4.0


# -- the same numbers as the LLM rubric ----------------------------------------------------------


def test_scores_are_the_llm_rubrics_rules_applied_to_the_recorded_facts(tmp_path: Path) -> None:
    """The verdict keeps the facts an LLM judge would be asked for; the LLM judges' own rule
    functions, given those facts, give exactly the verdict's scores and weighted S."""
    for item in items(tmp_path, count=12, max_changes=2):
        assert item.reference is not None
        sentences = canonical(item).split(". ")
        text = "Slightly " + sentences[0].lower().replace(" to the ", " ")  # vague, maybe partial
        verdict = judge(item, text)
        answers, scoring = verdict.meta["answers"], Scoring()
        recomputed = {
            "accuracy": accuracy_score(
                AccuracyAnswer.model_validate(answers["accuracy"]), item.reference, text, scoring
            ),
            "completeness": completeness_score(
                CompletenessAnswer.model_validate(answers["completeness"]),
                item.reference,
                text,
                scoring,
            ),
            "clarity": clarity_score(
                ClarityAnswer.model_validate(answers["clarity"]), item.reference, text, scoring
            ),
        }
        assert verdict.axes == recomputed
        assert verdict.weighted == default_rubric().weighted(verdict.axes)
        assert verdict.meta["weights"] == {"accuracy": 0.4, "completeness": 0.4, "clarity": 0.2}


def test_reasons_are_given_per_axis_in_words(tmp_path: Path) -> None:
    moved = one(tmp_path, "move")
    verdict = judge(moved, flipped(canonical(moved), change(moved)["direction"]))
    assert set(verdict.reasons) == {"accuracy", "completeness", "clarity"}
    assert "says" in verdict.reasons["accuracy"]
    assert "1 primary changes, 0 mentioned" in verdict.reasons["completeness"]


def test_items_without_an_instruction_or_a_shapes_reference_fail_alone(tmp_path: Path) -> None:
    item = one(tmp_path, "move")
    plain = Pair.of(item.pair.source, item.pair.target)
    foreign = Item(
        pair=plain,
        instruction=Instruction(pair_id=plain.id, text="Move it.", origin="model"),
        reference=Reference(pair_id=plain.id, primary=["Something moved."]),
    )
    no_instruction = item.model_copy(update={"instruction": None})
    context = PluginContext(step_id="judged", base_dir=tmp_path, work_dir=tmp_path)
    results = ShapesRulesJudge(ShapesRulesConfig(), context).judge([foreign, no_instruction, item])
    assert isinstance(results[0], SampleError) and "ShapesEdit" in results[0].message
    assert isinstance(results[1], SampleError)
    assert isinstance(results[2], Verdict)


def test_removing_two_objects_in_one_clause_covers_both_changes(tmp_path: Path) -> None:
    [item] = items(tmp_path, count=1, operations=["remove"], min_changes=2, max_changes=2)
    assert item.reference is not None
    first, second = (c["object"] for c in item.reference.meta[CHANGES])
    text = (
        f"Remove the {first['colour']} {first['shape']} "
        f"and the {second['colour']} {second['shape']}."
    )
    assert judge(item, text).axes == FULL_MARKS


def test_the_grammar_splits_clauses_at_verbs_but_not_inside_a_swap() -> None:
    assert [a.operation for a in parse("Swap the red circle and the blue square.")] == ["swap"]
    ops = parse("Move the red circle left and make the blue square larger, then remove the star")
    assert [a.operation for a in ops] == ["move", "resize", "remove"]
    assert parse("Zoom in by a factor of 1.5.")[0].amount == 1.5
