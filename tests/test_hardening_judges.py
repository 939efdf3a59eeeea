"""A judge's score is stored only when its answer is unambiguous, the Clarity terms are found
however they are typed, and the paper's rubric is followed where its prompts and tables disagree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ecap.records import Reference
from ecap.rubric import Axis, Scoring, UnparsableAnswer, parse_answer
from ecap.rubric.terms import vague_terms_in
from ecap.store.schema import ApiCall, SampleFailure
from ecap.testing import FakeLLMServer, query_store, run_spec
from ecap_judges.engine import JOB_FAILED
from ecap_judges.prompts import default_rubric

DRESS = Reference(
    pair_id="p",
    primary=["dress colour grey -> pink", "wide straps -> spaghetti straps", "midi -> mini"],
    secondary=["gold necklace -> thin silver necklace"],
    overall="A grey midi dress becomes a pink spaghetti-strap mini dress.",
)
AXES = {axis.name: axis for axis in default_rubric().axes}
FREE = Axis(name="style", weight=1.0, prompt="{reference} {instruction}")
ACCURATE = {"assertions": [], "hallucination": False, "major_errors": 0, "minor_errors": 0}


def checks(*statuses: str) -> list[dict[str, Any]]:
    return [{"change": i, "status": s} for i, s in enumerate(statuses, 1)]


def score(axis: str, answer: dict[str, Any], instruction: str = "x", **scoring: Any) -> float:
    text = json.dumps({"reasoning": "r", **answer})
    return AXES[axis].score(text, DRESS, instruction, Scoring(**scoring))[0]


def refusal(axis: Axis, text: str) -> str:
    with pytest.raises(UnparsableAnswer) as caught:
        axis.score(text, DRESS, "Change the dress to pink.")
    return str(caught.value)


# -- an answer is used only when it is unambiguous ----------------------------------------------


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_a_score_and_the_refusal_names_field_and_value(flag: bool) -> None:
    message = refusal(FREE, json.dumps({"score": flag, "reasoning": "r"}))
    assert "score" in message and json.dumps(flag) in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("major_errors", True), ("minor_errors", "1"), ("hallucination", 0), ("major_errors", 1.5)],
)
def test_counts_and_flags_take_only_their_own_type(field: str, value: Any) -> None:
    answer = {**ACCURATE, "primary_changes": checks("hit"), "score": 5, "reasoning": "r"}
    message = refusal(AXES["accuracy"], json.dumps({**answer, field: value}))
    assert field in message and json.dumps(value) in message


def test_a_whole_number_written_as_a_float_is_still_a_count() -> None:
    answer = {**ACCURATE, "major_errors": 1.0, "primary_changes": checks("hit", "hit", "hit")}
    assert score("accuracy", {**answer, "score": 5}) == 3.0


@pytest.mark.parametrize(
    "text",
    [
        '{"verdict": {"score": 4, "reasoning": "inner"}}',  # the top level lacks score
        '{"score": "high", "details": {"score": 4, "reasoning": "inner"}, "reasoning": "r"}',
        '[{"score": 4, "reasoning": "in a list"}]',
    ],
)
def test_a_nested_object_never_stands_in_for_an_invalid_answer(text: str) -> None:
    with pytest.raises(UnparsableAnswer):
        FREE.score(text, DRESS, "i")


def test_two_different_objects_are_ambiguous_not_first_wins() -> None:
    text = (
        'First thought: {"score": 5, "reasoning": "fine"}\n'
        'Corrected: {"score": 2, "reasoning": "the colour is wrong"}'
    )
    assert "2 different JSON objects" in refusal(FREE, text)


def test_the_same_object_repeated_is_one_answer() -> None:
    body = '{"score": 4, "reasoning": "r"}'
    answer = parse_answer(f"{body}\n```json\n{body}\n```", FREE.answer_model())
    assert answer.model_dump()["score"] == 4


def test_prose_with_brackets_around_one_answer_is_still_read() -> None:
    text = 'Step [1] done {not json}. {"score": 3.5, "reasoning": "r"} [end]'
    assert FREE.score(text, DRESS, "i")[0] == 3.5


# -- half points ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("claimed", "stored"), [(2.5, 3.0), (3.5, 4.0), (4.5, 5.0), (3.4, 3.0)])
def test_a_half_point_accuracy_rounds_up_never_to_even(claimed: float, stored: float) -> None:
    answer = {**ACCURATE, "primary_changes": checks("hit", "hit", "hit"), "score": claimed}
    assert score("accuracy", answer) == stored


def test_clarity_keeps_half_points_as_the_paper_asks_for_a_float() -> None:
    assert score("clarity", {"forbidden_terms": [], "score": 4.5}) == 4.5


# -- the prompts' reading by default, the tables' as an option -----------------------------------


@pytest.mark.parametrize(
    ("coverage", "secondary", "prompts", "tables"),
    [
        # "Change the dress style": a vague mention of one change (Table 8's 16.7% case)
        (("miss", "partial", "miss"), False, 2.0, 1.0),
        (("hit", "partial", "partial"), False, 5.0, 4.0),  # 100% vs 67%
        # Only the necklace (a secondary change): R = 0. The prompt's bonus applies; Table 8: 1.
        (("miss", "miss", "miss"), True, 1.5, 1.0),
        (("hit", "miss", "miss"), True, 2.5, 2.5),  # both give the bonus when 0 < R < 100%
    ],
)
def test_completeness_follows_the_prompt_by_default_and_the_table_on_request(
    coverage: tuple[str, ...], secondary: bool, prompts: float, tables: float
) -> None:
    answer = {"primary_changes": checks(*coverage), "secondary_covered": secondary, "score": 5}
    assert score("completeness", answer) == prompts
    assert score("completeness", answer, reading="tables") == tables


def test_the_reading_is_validated() -> None:
    with pytest.raises(ValueError, match="reading"):
        Scoring(reading="table")  # type: ignore[arg-type]


# -- the Clarity terms, however they are typed ---------------------------------------------------


@pytest.mark.parametrize(
    "instruction",
    [
        "Make the dress slightly pink.",
        "Make the dress SLIGHTLY pink.",
        "Make the dress Slight-ly pink.",  # hyphenated across a break
        "Make the dress slight-\n  ly pink.",
        "Make the dress s\u200blightly pink.",  # a zero-width space inside
        "Make the dress \u0455l\u0456ghtly pink.",  # Cyrillic dze and i
        "Make the dress \uff53\uff4c\uff49\uff47\uff48\uff54\uff4c\uff59 pink.",  # full width
        "Make the dress s\u00adlightly pink.",  # a soft hyphen
    ],
)
def test_a_degree_word_counts_however_it_is_typed(instruction: str) -> None:
    assert vague_terms_in(instruction, []) == ["slightly"]
    assert score("clarity", {"forbidden_terms": [], "score": 5}, instruction) == 3.0


@pytest.mark.parametrize(
    "instruction",
    [
        "Make it a  bit pinker.",
        "Make it A\tBit pinker.",
        "Make it a-bit pinker.",
        "Make it \u0430 bit.",
    ],
)
def test_a_two_word_term_survives_spacing_hyphens_and_look_alikes(instruction: str) -> None:
    assert "a bit" in vague_terms_in(instruction, [])


def test_verbs_and_references_count_when_the_judge_reads_them_so_in_any_spelling() -> None:
    instruction = "Adjust THAT dress; re-adjusted hem."
    assert vague_terms_in(instruction, ["adjust", "that"]) == ["adjust", "that"]
    assert vague_terms_in(instruction, []) == []  # "that" may be a conjunction: the judge decides
    assert vague_terms_in("Make the hem shorter.", ["adjust"]) == []  # not in the instruction


def test_distinct_terms_set_the_ceiling() -> None:
    instruction = "Optimise this image somewhat and make it slightly brighter."
    listed = ["optimise", "this", "it"]
    assert vague_terms_in(instruction, listed) == ["it", "optimize", "slightly", "somewhat", "this"]
    assert score("clarity", {"forbidden_terms": listed, "score": 5}, instruction) == 2.0


def test_words_that_merely_contain_a_term_do_not_count() -> None:
    assert (
        vague_terms_in("Add a bitter lemon by the food processor; item.", ["it", "process"]) == []
    )
    assert vague_terms_in("Add a bitter lemon.", ["a bit"]) == []


def test_terms_beyond_the_papers_list_count_only_when_configured() -> None:
    instruction = "Make the dress a little pinker and nicer."
    judge_says = ["a little", "nicer"]
    assert score("clarity", {"forbidden_terms": judge_says, "score": 5}, instruction) == 5.0
    extra = {"extra_vague_terms": ["A  Little", "nicer"]}
    answer = {"forbidden_terms": [], "score": 5}
    assert score("clarity", answer, instruction, **extra) == 2.5


# -- batch jobs -----------------------------------------------------------------------------------


def write_batch_spec(folder: Path, server: FakeLLMServer) -> Path:
    from PIL import Image

    (folder / "images").mkdir()
    rows = ["source,target,instruction,primary,secondary,overall"]
    for i in range(3):
        for side, blue in (("source", 40), ("target", 200)):
            Image.new("RGB", (8, 8), (i * 40, 90, blue)).save(folder / f"images/{i}-{side}.png")
        rows.append(
            f'images/{i}-source.png,images/{i}-target.png,Paint box {i} red,"[""red""]",[],x'
        )
    (folder / "eval.csv").write_text("\n".join(rows) + "\n")
    judge = {
        "model": "gpt-4.1",
        "api_key": "sk-fake",
        "base_url": server.openai_base_url,
        "batch": True,
        "batch_poll_interval": 0.01,
    }
    spec = {
        "name": "batch-failure",
        "store": f"sqlite:///{folder / 'ecap.db'}",
        "steps": {
            "eval": {"source": "csv", "with": {"path": "eval.csv"}},
            "judge": {"judge": "openai", "from": "eval", "with": judge},
        },
    }
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_a_failed_batch_job_gives_its_real_reason_to_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openai")
    from ecap_judges.openai_judge import OpenAIProvider

    reason = "batch job b-1 ended failed: token quota exceeded for the organisation"
    monkeypatch.setattr(OpenAIProvider, "poll_batch", lambda self, job_id: {JOB_FAILED: reason})
    with FakeLLMServer(lambda request: {"score": 5, "reasoning": "r"}) as server:
        run_spec(write_batch_spec(tmp_path, server))
    store = tmp_path / "ecap.db"
    assert query_store(store, select(ApiCall.status)) == ["error"] * 9  # 3 pairs x 3 axes
    assert set(query_store(store, select(ApiCall.error))) == {reason}
    failures = query_store(store, select(SampleFailure.message))
    assert len(failures) == 3 and all(reason in message for message in failures)
