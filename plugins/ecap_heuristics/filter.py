"""The ``heuristics`` filter: cheap checks that need no model, each saying why it dropped a row.

Every enabled check writes a 0/1 flag into ``Score.values`` (1: the check fired) and, when it
fires, its reason into ``Score.meta["reasons"]``; measurements (word count, image distances) and
the duplicate key (``text_hash``) go to ``Score.meta``. The default keep rule drops a row with
any flag set and keeps one row of each group of duplicate instructions::

    keep: {all_of: [{unflagged: all}, {unique: text_hash}]}

Duplicates are a property of the step's population, not of one row, which the filter sees only a
batch at a time: it records the normalised text's hash and the population-level ``unique`` rule
does the rest, deterministically (the row whose pair id sorts first stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from ecap.images import ImageReadError, prepare_image
from ecap.interfaces import Filter, KeepDecision, PluginConfig, decision_field
from ecap.keep import KeepRule, decide_items
from ecap.records import Item, SampleError, Score

from .images import PairDifference, difference
from .text import VagueTermCheck, garbled, leak, not_english, text_hash, word_count

Check = Literal["vague_terms", "length", "garbled", "not_english", "leak", "identical_images"]
CHECKS: tuple[Check, ...] = (
    "vague_terms",
    "length",
    "garbled",
    "not_english",
    "leak",
    "identical_images",
)
#: Pixels the near-identical check looks at: the hash and thumbnail need no more.
COMPARE_PIXELS = 256 * 256


class HeuristicsConfig(PluginConfig):
    checks: list[Check] = Field(
        default_factory=lambda: list(CHECKS), description="the checks to run (default: all)"
    )
    min_words: int = Field(3, ge=0, description="fewer words sets too_short")
    max_words: int = Field(150, ge=1, description="more words sets too_long")
    min_latin_share: float = Field(
        0.9, ge=0, le=1, description="a smaller share of Latin-script letters sets not_english"
    )
    extra_vague_terms: list[str] = Field(
        default_factory=list, description="more vague degrees or phrases to flag"
    )
    allowed_terms: list[str] = Field(
        default_factory=list,
        description="vague terms not to flag, e.g. [it] where pronouns are acceptable",
    )
    max_hash_distance: int = Field(
        2, ge=0, le=64, description="dHash bits (of 64) two near-identical images may differ by"
    )
    max_cell_difference: int = Field(
        6,
        ge=0,
        le=255,
        description="and the largest change (0-255) of any cell of a 16x16 colour thumbnail",
    )
    keep: KeepRule = decision_field(
        {"all_of": [{"unflagged": "all"}, {"unique": "text_hash"}]},
        validate_default=True,
        description="which rows to keep (docs/filters.md): by default no flag set and no "
        "duplicate instruction",
    )

    @field_validator("checks")
    @classmethod
    def _distinct(cls, value: list[Check]) -> list[Check]:
        return sorted(set(value), key=CHECKS.index)


class HeuristicsFilter(Filter):
    """Vague terms, length, garbled or non-English text, leaks of the target, duplicates and
    identical image pairs."""

    Config = HeuristicsConfig
    config: HeuristicsConfig
    revision = "1"

    def __init__(self, config: HeuristicsConfig, context: Any) -> None:
        super().__init__(config, context)
        self.vague = VagueTermCheck(config.extra_vague_terms, config.allowed_terms)

    def score(self, batch: Sequence[Item]) -> list[Score | SampleError]:
        return [self.score_one(item) for item in batch]

    def score_one(self, item: Item) -> Score | SampleError:
        if item.instruction is None:
            return SampleError(
                error_type="NoInstruction",
                message="the heuristics filter checks instructions; this item has none",
            )
        text = item.instruction.text
        config = self.config
        flags: dict[str, float] = {}
        reasons: dict[str, str] = {}
        meta: dict[str, Any] = {"text_hash": text_hash(text)}

        def record(flag: str, reason: str | None) -> None:
            flags[flag] = 1.0 if reason else 0.0
            if reason:
                reasons[flag] = reason

        if "vague_terms" in config.checks:
            record("vague_terms", self.vague(text))
        if "length" in config.checks:
            words = meta["words"] = word_count(text)
            record("too_short", f"{words} words < {config.min_words}" * (words < config.min_words))
            record("too_long", f"{words} words > {config.max_words}" * (words > config.max_words))
        if "garbled" in config.checks:
            record("garbled", garbled(text))
        if "not_english" in config.checks:
            record("not_english", not_english(text, config.min_latin_share))
        if "leak" in config.checks:
            record("leak", leak(text))
        if "identical_images" in config.checks:
            try:
                found = self.pair_difference(item)
            except ImageReadError as exc:
                return SampleError(error_type="ImageError", message=str(exc))
            meta["image_hash_distance"] = found.hash_distance
            meta["image_max_cell_difference"] = found.max_cell_difference
            same = found.near_identical(config.max_hash_distance, config.max_cell_difference)
            record(
                "identical_images",
                f"dHash distance {found.hash_distance} <= {config.max_hash_distance} and "
                f"largest thumbnail change {found.max_cell_difference} <= "
                f"{config.max_cell_difference}"
                if same
                else None,
            )
        meta["reasons"] = reasons
        return Score(
            pair_id=item.pair.id,
            instruction_id=item.instruction.id,
            scorer="heuristics",
            values=flags,
            meta=meta,
        )

    def pair_difference(self, item: Item) -> PairDifference:
        pair = item.pair
        if pair.source.sha256 == pair.target.sha256:
            return PairDifference(hash_distance=0, max_cell_difference=0)
        source, target = (
            prepare_image(ref, max_pixels=COMPARE_PIXELS).decoded()
            for ref in (pair.source, pair.target)
        )
        return difference(source, target)

    def decide(self, items: Sequence[Item]) -> list[KeepDecision]:
        return decide_items(self.config.keep, items)


__all__ = ["CHECKS", "HeuristicsConfig", "HeuristicsFilter"]
