"""Keep rules: each rule on exact numbers, combinations, ties, and what a drop says."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from ecap.keep import (
    components,
    decide,
    decide_items,
    needs_population,
    parse_rule,
    percentile_of,
)
from ecap.records import ImageRef, Item, Pair, Score


def scored(values: list[float], categories: list[str | None] | None = None, **extra: float):
    """Rows ``p0, p1, ...`` scoring ``values`` on ``score`` (plus constant extra components)."""
    categories = categories or [None] * len(values)
    return [
        (
            Score(
                id=f"s{i}",
                pair_id=f"p{i}",
                instruction_id=f"i{i}",
                scorer="t",
                values={"score": v, **extra},
            ),
            c,
        )
        for i, (v, c) in enumerate(zip(values, categories, strict=True))
    ]


def kept(rule: dict, rows, default_component: str = "score") -> list[int]:
    return [i for i, d in enumerate(decide(parse_rule(rule), rows, default_component)) if d.keep]


def test_min_score_keeps_values_at_or_above_the_minimum():
    rows = scored([6.4, 6.5, 9.0, 0.0])
    decisions = decide(parse_rule({"min_score": 6.5}), rows)
    assert [d.keep for d in decisions] == [False, True, True, False]
    assert decisions[0].reason == "score 6.4 < min 6.5"


def test_max_score_keeps_values_at_or_below_the_maximum():
    assert kept({"max_score": 0}, scored([0, 1, 0.5, -1])) == [0, 3]


def test_a_rule_reads_its_named_component_else_the_filters_default():
    rows = scored([1, 9], consistency=8.0)
    assert kept({"min_score": 5}, rows) == [1]
    assert kept({"min_score": 5, "component": "consistency"}, rows) == [0, 1]
    assert kept({"min_score": 5}, rows, default_component="consistency") == [0, 1]


def test_a_missing_or_nan_component_drops_the_row_and_says_why():
    rows = scored([7.0, math.nan])
    decisions = decide(parse_rule({"min_score": 1, "component": "overall"}), rows)
    assert not decisions[0].keep
    assert decisions[0].reason == "no 'overall' in the score (it has score)"
    assert decide(parse_rule({"min_score": 1}), rows)[1].reason == "score is NaN"


def test_top_k_per_category_keeps_the_k_best_of_each_category():
    rows = scored([1, 5, 3, 9, 2, 4], ["a", "a", "a", "b", "b", None])
    assert kept({"top_k": 2}, rows) == [1, 2, 3, 4, 5]
    assert kept({"top_k": 1}, rows) == [1, 3, 5]
    decisions = decide(parse_rule({"top_k": 1}), rows)
    assert decisions[2].reason == "score ranked 2 of 3 of category 'a'; top_k keeps 1"


def test_top_k_over_the_whole_step():
    rows = scored([1, 5, 3, 9, 2, 4], ["a", "a", "a", "b", "b", None])
    assert kept({"top_k": 2, "per_category": False}, rows) == [1, 3]
    assert kept({"top_k": 0, "per_category": False}, rows) == []
    assert kept({"top_k": 99, "per_category": False}, rows) == [0, 1, 2, 3, 4, 5]


def test_top_p_keeps_the_ceiling_of_p_times_n_rows_per_category():
    rows = scored([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert kept({"top_p": 0.3}, rows) == [7, 8, 9]  # exactly 3, not 4 by float noise
    assert kept({"top_p": 0.25}, rows) == [7, 8, 9]  # ceil(2.5) = 3
    assert kept({"top_p": 1.0}, rows) == list(range(10))
    by_category = scored([1, 2, 3, 10, 20], ["a", "a", "a", "b", "b"])
    assert kept({"top_p": 0.5}, by_category) == [1, 2, 4]  # ceil(1.5)=2 of a, ceil(1)=1 of b


def test_ties_are_broken_by_pair_then_instruction_id_whatever_the_input_order():
    rows = scored([5, 5, 5, 5])
    expected = [True, True, False, False]
    assert [d.keep for d in decide(parse_rule({"top_k": 2}), rows)] == expected
    shuffled = list(reversed(rows))
    decisions = decide(parse_rule({"top_k": 2}), shuffled)
    assert {s.pair_id for (s, _), d in zip(shuffled, decisions, strict=True) if d.keep} == {
        "p0",
        "p1",
    }


def test_percentile_is_a_threshold_on_values_that_keeps_every_tied_row():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile_of(values, 50) == 5.5
    assert percentile_of(values, 25) == 3.25
    assert percentile_of([7], 90) == 7
    assert kept({"percentile": 50}, scored(values)) == [5, 6, 7, 8, 9]
    assert kept({"percentile": 0}, scored(values)) == list(range(10))
    tied = scored([1, 5, 5, 5, 9])
    assert percentile_of([1, 5, 5, 5, 9], 50) == 5
    assert kept({"percentile": 50}, tied) == [1, 2, 3, 4]
    decision = decide(parse_rule({"percentile": 50}), tied)[0]
    assert decision.reason == "score 1 < percentile 50 (5)"


def test_percentile_per_category():
    rows = scored([1, 3, 10, 30], ["a", "a", "b", "b"])
    assert kept({"percentile": 50}, rows) == [2, 3]
    assert kept({"percentile": 50, "per_category": True}, rows) == [1, 3]


def test_unflagged_drops_rows_with_a_set_flag_and_quotes_the_flags_reason():
    flagged = Score(
        pair_id="p",
        scorer="heuristics",
        values={"vague_terms": 1.0, "too_short": 0.0},
        meta={"reasons": {"vague_terms": "vague degree 'slightly'"}},
    )
    clean = Score(pair_id="q", scorer="heuristics", values={"vague_terms": 0, "too_short": 0})
    rows = [(flagged, None), (clean, None)]
    decisions = decide(parse_rule({"unflagged": "all"}), rows)
    assert [d.keep for d in decisions] == [False, True]
    assert decisions[0].reason == "vague_terms: vague degree 'slightly'"
    assert [d.keep for d in decide(parse_rule({"unflagged": ["too_short"]}), rows)] == [True, True]


def test_unique_keeps_the_first_of_each_group_in_tiebreak_order():
    rows = [
        (Score(id="s", pair_id=p, instruction_id=i, scorer="h", values={}, meta=m), None)
        for p, i, m in [
            ("p2", "i2", {"text_hash": "x"}),
            ("p1", "i1", {"text_hash": "x"}),
            ("p3", "i3", {"text_hash": "y"}),
            ("p4", "i4", {}),
        ]
    ]
    decisions = decide(parse_rule({"unique": "text_hash"}), rows)
    assert [d.keep for d in decisions] == [False, True, True, False]
    assert decisions[0].reason == "duplicate (text_hash) of i1"
    assert decisions[3].reason == "no 'text_hash' in the score"


def test_all_of_evaluates_each_member_over_the_whole_population_then_ands():
    rows = scored([9, 8, 7, 2], ["a", "a", "a", "a"])
    rule = {"all_of": [{"top_k": 3}, {"min_score": 7.5}]}
    decisions = decide(parse_rule(rule), rows)
    assert [d.keep for d in decisions] == [True, True, False, False]
    # the top 3 include the row scoring 7, which the minimum drops; 2 is not promoted
    assert decisions[2].reason == "score 7 < min 7.5"
    assert decisions[3].reason == (
        "score ranked 4 of 4 of category 'a'; top_k keeps 3; score 2 < min 7.5"
    )


def test_any_of_keeps_a_row_some_member_keeps():
    rows = scored([9, 1, 5], consistency=0.0)
    rows[1][0].values["consistency"] = 10.0
    rule = {"any_of": [{"min_score": 8}, {"min_score": 9, "component": "consistency"}]}
    decisions = decide(parse_rule(rule), rows)
    assert [d.keep for d in decisions] == [True, True, False]
    assert decisions[2].reason == "score 5 < min 8 and consistency 0 < min 9"


def test_nested_combinations():
    rows = scored([1, 2, 3, 4, 5, 6])
    rule = {"any_of": [{"all_of": [{"min_score": 2}, {"max_score": 3}]}, {"top_k": 1}]}
    assert kept(rule, rows) == [1, 2, 5]


def test_decisions_do_not_depend_on_the_input_order():
    rng = random.Random(7)
    rows = scored([rng.choice([1, 2, 3]) for _ in range(40)], [rng.choice("ab") for _ in range(40)])
    rule = parse_rule({"all_of": [{"top_p": 0.5}, {"percentile": 20}]})
    baseline = {s.pair_id: d.keep for (s, _), d in zip(rows, decide(rule, rows), strict=True)}
    rng.shuffle(rows)
    shuffled = {s.pair_id: d.keep for (s, _), d in zip(rows, decide(rule, rows), strict=True)}
    assert shuffled == baseline


def test_rules_are_validated_by_their_key():
    with pytest.raises(ValidationError, match="needs one of the keys min_score"):
        parse_rule({"minimum": 3})
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_rule({"min_score": 3, "top_k": 2})
    with pytest.raises(ValidationError):
        parse_rule({"top_p": 1.5})
    with pytest.raises(ValidationError):
        parse_rule({"all_of": []})


def test_what_a_rule_reads_and_whether_it_needs_the_population():
    rule = parse_rule({"all_of": [{"min_score": 1}, {"unflagged": ["leak"]}]})
    assert components(rule, "prompt_following") == {"prompt_following", "leak"}
    assert not needs_population(rule)
    assert needs_population(parse_rule({"any_of": [{"min_score": 1}, {"percentile": 3}]}))


def test_decide_items_drops_an_unscored_item_and_reads_the_pairs_category():
    pair = Pair.of(
        ImageRef(uri="s.png", sha256="a"), ImageRef(uri="t.png", sha256="b"), category="x"
    )
    score = Score(pair_id=pair.id, scorer="t", values={"score": 3.0})
    items = [Item(pair=pair, score=score), Item(pair=pair)]
    decisions = decide_items(parse_rule({"top_k": 1}), items)
    assert [d.keep for d in decisions] == [True, False]
    assert decisions[1].reason == "the item has no score"
