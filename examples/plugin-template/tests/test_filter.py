"""Tests of the instruction-length filter.

Most tests construct the plugin directly, the way the runner does (``Cls(config, context)``), and
call ``score`` and ``keep`` on hand-made items: fast, and no store involved. The last one runs a
small pipeline through ``ecap.testing`` to show the plugin works when installed
(``pip install -e .``); its fixtures come from ecap's pytest plugin, with no import needed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ecap.hashing import semantic_config
from ecap.interfaces import PluginContext
from ecap.plugins import Registry
from ecap.records import ImageRef, Instruction, Item, Pair, SampleError, Score
from ecap.testing import make_pairs, run_spec
from pydantic import ValidationError

from ecap_plugin_template import InstructionLengthFilter
from ecap_plugin_template.instruction_length import count_words, vague_verbs_used


def make_filter(tmp_path: Path, **settings: object) -> InstructionLengthFilter:
    config = InstructionLengthFilter.Config.model_validate(settings)
    context = PluginContext(step_id="length", base_dir=tmp_path, work_dir=tmp_path)
    return InstructionLengthFilter(config, context)


def make_item(text: str | None, n: int = 0) -> Item:
    """An item with a pair whose images exist only as hashes: enough for a text-only filter."""

    def image(side: str) -> ImageRef:
        return ImageRef(
            uri=f"{n}-{side}.png", sha256=hashlib.sha256(f"{n}{side}".encode()).hexdigest()
        )

    pair = Pair.of(image("source"), image("target"))
    if text is None:
        return Item(pair=pair)
    return Item(pair=pair, instruction=Instruction(pair_id=pair.id, text=text, origin="model"))


def scores_of(plugin: InstructionLengthFilter, items: list[Item]) -> list[Score]:
    """``plugin.score(items)``, checking that every item got a score (no ``SampleError``)."""
    results = plugin.score(items)
    assert len(results) == len(items)  # one result per item, in order
    scores = [r for r in results if isinstance(r, Score)]
    assert len(scores) == len(results), results
    return scores


TEXTS = [
    "Change it.",  # 2 words, vague
    "Change the red ball to blue.",  # 6 words
    "Adjust the image slightly and add a small tree on the right.",  # 12 words, vague
    "Move the red ball from the left side of the image to the right side.",  # 15 words
]


def test_scores_word_counts_and_vague_flags(tmp_path: Path) -> None:
    items = [make_item(text, n) for n, text in enumerate(TEXTS)]
    scores = scores_of(make_filter(tmp_path), items)

    assert [s.values["words"] for s in scores] == [2.0, 6.0, 12.0, 15.0]
    assert [s.values["vague"] for s in scores] == [1.0, 0.0, 1.0, 0.0]
    for score, item in zip(scores, items, strict=True):
        assert score.scorer == "instruction-length"
        assert score.pair_id == item.pair.id
        assert item.instruction is not None
        assert score.instruction_id == item.instruction.id  # lineage: the score used it
    assert scores[0].meta == {"vague_verbs": ["change"]}
    assert scores[2].meta == {"vague_verbs": ["adjust"]}


def test_keeps_word_counts_within_bounds(tmp_path: Path) -> None:
    items = [make_item(text, n) for n, text in enumerate(TEXTS)]
    plugin = make_filter(tmp_path, min_words=3, max_words=12)
    assert [plugin.keep(s) for s in scores_of(plugin, items)] == [False, True, True, False]


def test_drop_vague_also_drops_flagged_instructions(tmp_path: Path) -> None:
    items = [make_item(text, n) for n, text in enumerate(TEXTS)]
    plugin = make_filter(tmp_path, min_words=0, max_words=100, drop_vague=True)
    assert [plugin.keep(s) for s in scores_of(plugin, items)] == [False, True, False, True]


def test_item_without_instruction_fails_alone(tmp_path: Path) -> None:
    results = make_filter(tmp_path).score([make_item(None, 0), make_item("Make the sky dark.", 1)])
    assert isinstance(results[0], SampleError)
    assert results[0].error_type == "NoInstruction"
    assert isinstance(results[1], Score)
    assert results[1].values["words"] == 4.0


def test_thresholds_are_decision_fields(tmp_path: Path) -> None:
    """Thresholds stay out of the cache key, so re-thresholding recomputes no score; the verb list
    changes scores, so it is part of the key."""
    loose = make_filter(tmp_path, min_words=1, max_words=100)
    strict = make_filter(tmp_path, min_words=5, max_words=10, drop_vague=True)
    assert semantic_config(loose.config) == semantic_config(strict.config)
    assert set(semantic_config(loose.config)) == {"vague_verbs"}

    # The same stored score, judged again under new thresholds.
    [score] = scores_of(loose, [make_item("Change the red ball to blue.")])
    assert loose.keep(score) and strict.keep(score)
    assert not make_filter(tmp_path, min_words=7, max_words=100).keep(score)


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="min_words"):
        make_filter(tmp_path, min_words=10, max_words=5)
    with pytest.raises(ValidationError, match="extra"):
        make_filter(tmp_path, max_word=5)  # a typo is an error, not silently ignored
    plugin = make_filter(tmp_path, vague_verbs=["Tweak", "redo"])
    assert plugin.config.vague_verbs == ["redo", "tweak"]


@pytest.mark.parametrize(
    ("text", "words", "vague"),
    [
        ("", 0, []),
        ("Change the ball's colour to blue.", 6, []),
        ("Put the lamp at the top-left.", 6, []),
        ("Please modify this a little.", 5, ["modify"]),
        ("Make the sky dark blue, then change it.", 8, ["change"]),
        ("Edit the picture", 3, ["edit"]),
        ("Make no change to the sky.", 6, []),
    ],
)
def test_text_heuristics(text: str, words: int, vague: list[str]) -> None:
    assert count_words(text) == words
    assert vague_verbs_used(text, ["change", "modify", "edit"]) == vague


def test_runs_in_a_pipeline(tmp_path: Path, ecap_registry: Registry) -> None:
    """Needs the package installed: the registry finds the filter through its entry point."""
    make_pairs(tmp_path, count=3)  # categories color, add, remove
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        """
name: instruction-length-test
steps:
  pairs: {source: csv, with: {path: pairs.csv}}
  caps:
    caption: fake
    from: pairs
    with:
      replies:
        color: "Change it."
        add: "Add a brown wooden box in the middle of the grass."
        remove: "Remove the yellow sun from the upper right corner of the sky."
  length: {filter: instruction-length, from: caps, with: {min_words: 3, max_words: 11}}
"""
    )
    result = run_spec(spec, registry=ecap_registry)
    assert result.status == "complete"
    assert result.steps["length"].counts["done"] == 3
    assert result.steps["length"].counts["kept"] == 1  # "Add ..." (11 words); "Remove ..." has 12

    # A new threshold: the scores come from the store, and the decision is made again.
    spec.write_text(spec.read_text().replace("max_words: 11", "max_words: 12"))
    again = run_spec(spec, registry=ecap_registry)
    assert again.steps["length"].status == "cached"
    assert again.steps["length"].counts["kept"] == 2
