"""The ``shapes-annotator``: a scripted stand-in for the paper's human refiners and preference
correctors, so the whole recipe runs offline. It is never a person, and says so: every record it
writes has origin ``human`` (it takes a human's place in the recipe) with the author
``simulated:shapes-annotator`` and ``meta["simulated"] = true``, so provenance and reports can
always tell its work from real people's.

What it writes is the canonical instruction for the pair's reference (the same text the
``shapes`` source emits with ``include_instruction``), i.e. a perfect annotator:

- ``task: refine``: the refinement of the model's instruction (its ``parent_id``);
- ``task: prefer``: for a model instruction that fails the rules judge (S below ``prefer_below``),
  the refinement and a preference with the refinement chosen and the model's instruction
  rejected, the rejected one's failure-mode tags kept on the preference; an instruction that
  passes yields nothing (no correction needed).

Tasks finish at once: ``push`` returns stable task ids, ``pull`` answers them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from ecap.interfaces import Annotator, PluginConfig
from ecap.records import Instruction, Item, Preference, SampleError, Verdict

from .judge import JUDGE_NAME, ShapesRulesConfig, score
from .language import canonical_instruction
from .operations import Change
from .source import CHANGES, SECONDARY

AUTHOR = "simulated:shapes-annotator"


class ShapesAnnotatorConfig(PluginConfig):
    task: Literal["refine", "prefer"] = Field(
        "refine",
        description="refine: rewrite every instruction; prefer: correct failing instructions "
        "into preferences (chosen = the rewrite, rejected = the model's)",
    )
    prefer_below: float = Field(
        5.0,
        ge=1,
        le=5,
        description="prefer: a model instruction whose shapes-rules S is below this is a failure",
    )


class NotAShapesPair(ValueError):
    """The item has no ShapesEdit reference to write an instruction from."""


def reference_instruction(item: Item) -> str:
    """The canonical instruction for the item's reference: every primary and secondary change."""
    reference = item.reference
    if reference is None or CHANGES not in reference.meta:
        raise NotAShapesPair("the item has no ShapesEdit reference (made by the shapes source)")
    changes = [*reference.meta[CHANGES], *reference.meta.get(SECONDARY, [])]
    return canonical_instruction([Change.from_descriptor(c) for c in changes])


def refine(item: Item) -> list[Item]:
    """The item with its instruction replaced by the simulated refinement of it."""
    parent = item.instruction
    refined = Instruction(
        pair_id=item.pair.id,
        text=reference_instruction(item),
        origin="human",
        author=AUTHOR,
        parent_id=parent.id if parent else None,
        meta={"simulated": True, "task": "refine"},
    )
    return [
        item.model_copy(
            update={"instruction": refined, "score": None, "verdict": None, "preference": None}
        )
    ]


def prefer(item: Item, config: ShapesAnnotatorConfig) -> list[Item]:
    """A preference correcting the item's instruction if it fails, else nothing."""
    rejected = item.instruction
    if rejected is None:
        raise NotAShapesPair("a prefer task needs the model's instruction to correct")
    verdict = _verdict(item)
    if verdict.weighted is not None and verdict.weighted >= config.prefer_below:
        return []
    [corrected] = refine(item)
    assert corrected.instruction is not None
    preference = Preference(
        pair_id=item.pair.id,
        chosen_id=corrected.instruction.id,
        rejected_id=rejected.id,
        meta={
            "simulated": True,
            "author": AUTHOR,
            "rejected_labels": verdict.labels,
            "rejected_score": verdict.weighted,
        },
    )
    return [corrected.model_copy(update={"preference": preference})]


def _verdict(item: Item) -> Verdict:
    """The rules verdict on the item's instruction: the upstream one if a shapes-rules judge
    already gave it, else computed here."""
    found = item.verdict
    if (
        found is not None
        and found.judge == JUDGE_NAME
        and item.instruction is not None
        and found.instruction_id == item.instruction.id
    ):
        return found
    return score(item, ShapesRulesConfig())


class ShapesAnnotator(Annotator):
    """Simulated refiner and preference corrector for ShapesEdit pairs."""

    Config = ShapesAnnotatorConfig
    config: ShapesAnnotatorConfig
    revision = "1"

    def push(self, batch: Sequence[Item]) -> list[str]:
        """Stable ids: pushing the same item again yields the same task."""
        return [
            f"shapes-{self.config.task}:{item.pair.id[:16]}:"
            f"{item.instruction.id if item.instruction else '-'}"
            for item in batch
        ]

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        out: list[list[Item] | SampleError | None] = []
        for item, _ in tasks:
            try:
                out.append(
                    refine(item) if self.config.task == "refine" else prefer(item, self.config)
                )
            except NotAShapesPair as exc:
                out.append(SampleError.from_exception(exc))
        return out
