"""The paper's rules hold whatever the judge model answers."""

from __future__ import annotations

import json

import pytest

from ecap.records import Reference
from ecap.rubric import (
    AccuracyAnswer,
    Axis,
    Rubric,
    UnparsableAnswer,
    parse_answer,
)
from ecap_judges.prompts import default_rubric

DRESS = Reference(
    pair_id="p",
    primary=["dress colour grey -> pink", "wide straps -> spaghetti straps", "midi -> mini"],
    secondary=["gold necklace -> thin silver necklace"],
    overall="A grey midi dress becomes a pink spaghetti-strap mini dress.",
)
AXES = {axis.name: axis for axis in default_rubric().axes}


def checks(*statuses: str) -> list[dict[str, object]]:
    return [{"change": i, "status": s} for i, s in enumerate(statuses, 1)]


def answer(axis: str, **fields: object) -> str:
    base = {"reasoning": "r", "score": 5}
    return json.dumps({**base, **fields})


def score(axis: str, text: str, instruction: str = "Change the dress to pink.") -> float:
    return AXES[axis].score(text, DRESS, instruction)[0]


ACCURATE = {"hallucination": False, "major_errors": 0, "minor_errors": 0}


@pytest.mark.parametrize(
    ("facts", "coverage", "expected"),
    [
        (ACCURATE, ("hit", "hit", "miss"), 5.0),  # all facts right, 67% covered
        (ACCURATE, ("hit", "miss", "miss"), 4.0),  # 33%: at most 4
        (ACCURATE, ("miss", "miss", "miss"), 3.0),  # under 30%: at most 3 (no skipping edits)
        ({**ACCURATE, "minor_errors": 1}, ("hit", "hit", "hit"), 4.0),  # error on unchanged
        ({**ACCURATE, "major_errors": 1}, ("hit", "hit", "hit"), 3.0),
        ({**ACCURATE, "major_errors": 2}, ("hit", "hit", "hit"), 2.0),
        ({**ACCURATE, "hallucination": True}, ("hit", "hit", "hit"), 2.0),  # invented "add hat"
    ],
)
def test_accuracy_caps_apply_even_when_the_judge_says_5(facts, coverage, expected):
    text = answer("accuracy", primary_changes=checks(*coverage), **facts)
    assert score("accuracy", text) == expected


def test_accuracy_keeps_a_lower_judgement_and_counts_n_from_the_reference():
    low = answer("accuracy", score=1, primary_changes=checks("hit", "hit", "hit"), **ACCURATE)
    assert score("accuracy", low) == 1.0
    # The judge claims 1 of 1 changes; the reference has 3, so coverage is 33%: at most 4.
    short = answer("accuracy", primary_changes=checks("hit"), **ACCURATE)
    assert score("accuracy", short) == 4.0


@pytest.mark.parametrize(
    ("coverage", "secondary", "expected"),
    [
        (("hit", "hit", "hit"), False, 5.0),
        (("hit", "hit", "hit"), True, 5.0),  # no bonus at 100%
        (("hit", "hit", "partial"), False, 5.0),  # a vague mention is a hit (the prompt)
        (("hit", "hit", "miss"), False, 4.0),  # 67%
        (("hit", "hit", "miss"), True, 4.5),  # +0.5 for a covered secondary change
        (("hit", "partial", "miss"), False, 4.0),  # 67%
        (("hit", "miss", "miss"), False, 2.0),  # 33%
        (("partial", "miss", "miss"), False, 2.0),  # 33%
        (("miss", "miss", "miss"), False, 1.0),
        (("miss", "miss", "miss"), True, 1.5),
    ],
)
def test_completeness_is_the_lookup_table_plus_bonus_never_the_judges_number(
    coverage, secondary, expected
):
    for claimed in (1, 5):
        text = answer(
            "completeness",
            score=claimed,
            primary_changes=checks(*coverage),
            secondary_covered=secondary,
        )
        assert score("completeness", text) == expected


@pytest.mark.parametrize(
    ("instruction", "listed", "expected"),
    [
        ("Change the grey dress to a pink silk mini dress.", [], 5.0),
        ("Slightly change the dress to pink.", [], 3.0),  # found by the code itself
        ("Adjust that dress to pink.", ["adjust", "that"], 2.5),
        ("Adjust that dress somewhat to pink.", ["adjust", "that"], 2.0),
        ("Change the dress to pink.", ["adjust", "this"], 5.0),  # invented terms are ignored
    ],
)
def test_clarity_ceilings_count_only_terms_the_instruction_contains(instruction, listed, expected):
    text = answer("clarity", forbidden_terms=listed, missing_attributes=[])
    assert score("clarity", text, instruction) == expected


def test_answers_are_found_in_fences_and_chatter_but_never_guessed():
    fields = {"primary_changes": checks("hit"), "score": 4, "reasoning": "ok", **ACCURATE}
    fenced = f"Sure! Here is my grading:\n```json\n{json.dumps(fields)}\n```\nThanks."
    assert isinstance(parse_answer(fenced, AccuracyAnswer), AccuracyAnswer)
    for bad in ("", "Score: 5", '{"score": 5', json.dumps({"score": 5, "reasoning": "x"})):
        with pytest.raises(UnparsableAnswer):
            parse_answer(bad, AccuracyAnswer)


def test_rubrics_are_data_weights_and_extra_axes_come_from_the_spec():
    from ecap_judges.engine import RubricJudgeConfig

    config = RubricJudgeConfig.model_validate(
        {"model": "m", "weights": {"accuracy": 0.5, "completeness": 0.3}}
    )
    assert [a.weight for a in config.rubric.axes] == [0.5, 0.3, 0.2]
    with pytest.raises(ValueError, match="unknown axes"):
        RubricJudgeConfig.model_validate({"model": "m", "weights": {"fluency": 1}})

    extra = Axis(name="fluency", weight=0.1, prompt="Rate fluency of {instruction}.", max_score=5)
    rubric = Rubric(id="mine", axes=[*default_rubric().axes, extra])
    assert rubric.weighted({"accuracy": 5, "completeness": 4, "clarity": 3, "fluency": 5}) == 4.7
    assert extra.score('{"score": 9, "reasoning": "x"}', DRESS, "i")[0] == 5.0
    assert default_rubric().weighted({"accuracy": 5, "completeness": 4.5, "clarity": 3}) == 4.4
