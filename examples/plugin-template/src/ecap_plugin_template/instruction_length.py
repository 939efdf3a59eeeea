"""The ``instruction-length`` filter: cheap, explainable checks on an editing instruction's text.

Editing instructions that are very short ("Change it.") rarely say enough to reproduce an edit,
and very long ones tend to ramble or describe the whole image instead of the change. Counting
words is a crude but transparent first cut before an expensive reward model or judge sees the
data, and it costs nothing to run on millions of rows.

It is a heuristic, and says so: it looks at the words of the instruction only, never at the
images, so it cannot tell a correct instruction from a wrong one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ecap.interfaces import Filter, PluginConfig, decision_field
from ecap.records import Item, SampleError, Score
from pydantic import Field, field_validator, model_validator

#: A word: letters or digits, possibly joined by an apostrophe or a hyphen ("ball's", "top-left").
WORD = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")
#: Punctuation that ends a clause; a vague verb is judged by what follows it inside its clause.
CLAUSE_END = re.compile(r"[.,;:!?\n]")
#: Words that also start a new clause ("make the sky blue and adjust it").
CLAUSE_WORDS = frozenset({"and", "then", "but"})
#: Words that name no object or attribute: pronouns, articles, the image as a whole, degree words.
#: A vague verb followed only by these ("Adjust it a bit.", "Modify the image.") is flagged.
FILLER = frozenset(
    {
        "a",
        "an",
        "the",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "them",
        "image",
        "picture",
        "photo",
        "photograph",
        "scene",
        "something",
        "things",
        "stuff",
        "everything",
        "some",
        "bit",
        "little",
        "slightly",
        "somewhat",
        "more",
        "please",
        "accordingly",
        "appropriately",
    }
)
DEFAULT_VAGUE_VERBS = ("change", "modify", "adjust", "alter", "edit", "tweak", "fix", "improve")


class InstructionLengthConfig(PluginConfig):
    """Settings of ``filter: instruction-length``.

    ``vague_verbs`` changes the scores, so it is an ordinary (semantic) field: changing it
    recomputes them. ``min_words``, ``max_words`` and ``drop_vague`` only turn stored scores into
    keep/drop, so they are decision fields: changing them re-runs nothing.
    """

    # A plain default (pydantic copies it per instance), so that `ecap plugins show` displays it;
    # validate_default runs the validator below on it too.
    vague_verbs: list[str] = Field(
        list(DEFAULT_VAGUE_VERBS),
        validate_default=True,
        description="verbs (imperative, base form) flagged as vague when nothing names what "
        "they act on",
    )
    min_words: int = decision_field(3, ge=0, description="drop instructions with fewer words")
    max_words: int = decision_field(80, ge=1, description="drop instructions with more words")
    drop_vague: bool = decision_field(
        False, description="also drop instructions flagged vague (score 'vague' = 1)"
    )

    @field_validator("vague_verbs")
    @classmethod
    def _lowercase(cls, verbs: list[str]) -> list[str]:
        # Sorted and lowercased, so that reordering the list is not a change of the scores.
        return sorted({verb.strip().lower() for verb in verbs if verb.strip()})

    @model_validator(mode="after")
    def _bounds(self) -> InstructionLengthConfig:
        if self.min_words > self.max_words:
            raise ValueError(
                f"min_words ({self.min_words}) is larger than max_words ({self.max_words})"
            )
        return self


def count_words(text: str) -> int:
    """Words in ``text``; punctuation is not a word, a hyphenated compound is one."""
    return len(WORD.findall(text))


def vague_verbs_used(text: str, verbs: Sequence[str]) -> list[str]:
    """The vague verbs in ``text`` that act on nothing named.

    A verb is vague when every word after it, up to the end of its clause, is filler ("Change
    it.", "Adjust the image slightly."). "Change the ball to blue." names an object and a target,
    so it passes. This is a surface check, not a parser: "Modify the image to look better." passes
    too, because "to look better" is not filler.
    """
    wanted = set(verbs)
    found: list[str] = []
    for clause in CLAUSE_END.split(text.lower()):
        words = WORD.findall(clause)
        # Split further at "and" / "then" / "but", which start a new clause without punctuation.
        parts: list[list[str]] = [[]]
        for word in words:
            if word in CLAUSE_WORDS:
                parts.append([])
            else:
                parts[-1].append(word)
        for part in parts:
            for i, word in enumerate(part):
                if word in wanted and all(w in FILLER for w in part[i + 1 :]):
                    found.append(word)
    return found


class InstructionLengthFilter(Filter):
    """Scores each (pair, instruction) by its word count and a vagueness flag, and keeps those
    whose word count lies within ``[min_words, max_words]`` (and, with ``drop_vague``, that are
    not flagged).

    Score values: ``words`` (the word count) and ``vague`` (1.0 when a vague verb such as "change"
    or "adjust" acts on nothing named, else 0.0). The vague verbs found are kept in the score's
    ``meta`` so that ``ecap provenance show`` explains a flag.
    """

    Config = InstructionLengthConfig
    config: InstructionLengthConfig
    #: Bump when the same config and text would now give other scores (e.g. a change to FILLER),
    #: so that stored scores are recomputed.
    revision = "1"

    def score(self, batch: Sequence[Item]) -> list[Score | SampleError]:
        """One result per item, in order. Pure string work, so it never raises for a batch: an
        item without an instruction is that item's own failure, recorded and shown by
        ``ecap runs show``, and the others are scored."""
        out: list[Score | SampleError] = []
        for item in batch:
            if item.instruction is None:
                out.append(
                    SampleError(
                        error_type="NoInstruction",
                        message=f"pair {item.pair.id[:12]} has no instruction to measure; "
                        "put this filter after a caption step or a source with instructions",
                    )
                )
                continue
            text = item.instruction.text
            vague = vague_verbs_used(text, self.config.vague_verbs)
            out.append(
                Score(
                    pair_id=item.pair.id,
                    instruction_id=item.instruction.id,
                    scorer="instruction-length",
                    values={"words": float(count_words(text)), "vague": 1.0 if vague else 0.0},
                    meta={"vague_verbs": vague} if vague else {},
                )
            )
        return out

    def keep(self, score: Score) -> bool:
        """Decide from the stored score and decision fields only: the runner calls this on every
        run, also for cached scores, so a new threshold takes effect without recomputing."""
        words = score.values["words"]
        if not self.config.min_words <= words <= self.config.max_words:
            return False
        return not (self.config.drop_vague and score.values.get("vague", 0.0) >= 1.0)
