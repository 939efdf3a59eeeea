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
  passes yields nothing (no correction needed);
- ``task: evaluate``: a human-kind verdict grading the model's instruction with the paper's
  defect codes (``P0:viewpoint``...), translated from the rules judge's failure modes by
  :data:`DEFECT_CODES`, which is what ``ecap report``'s P0/P1/P2 table (the paper's Table 3)
  reads. Its ``judge`` is ``human:simulated:shapes-annotator``.

Tasks finish at once: ``push`` returns stable task ids, ``pull`` answers them all. With
``label_studio`` set, the same work goes through a Label Studio server instead: the tasks are
``annotate: label-studio``'s, answered there by this annotator as its own user
(:mod:`ecap_shapes.label_studio`), and read back as people's answers are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ecap.interfaces import Annotator, PluginConfig, PluginContext
from ecap.records import Instruction, Item, Preference, SampleError, Verdict

from .judge import (
    HALLUCINATION,
    JUDGE_NAME,
    MISSING_ATTRIBUTE,
    OMISSION,
    ORIENTATION,
    UNCHANGED_ELEMENT,
    VAGUE_TERMS,
    VIEWPOINT,
    WRONG_AMOUNT,
    WRONG_ATTRIBUTE,
    WRONG_DIRECTION,
    WRONG_OBJECT,
    ShapesRulesConfig,
    score,
)
from .language import canonical_instruction
from .operations import Change
from .source import CHANGES, SECONDARY

AUTHOR = "simulated:shapes-annotator"


#: The rules judge's failure modes as the defect checklist's codes, the way the paper's
#: annotators grade: a flipped direction or a misread camera change is a spatial error, always
#: critical; a wrong or unnamed subject, a missing primary change or an invented one makes the
#: instruction unusable; a wrong amount is moderate; vague wording is minor.
DEFECT_CODES: dict[str, str] = {
    ORIENTATION: "P0:viewpoint",
    VIEWPOINT: "P0:viewpoint",
    WRONG_OBJECT: "P0:attribute",
    WRONG_ATTRIBUTE: "P0:attribute",
    WRONG_DIRECTION: "P0:attribute",
    HALLUCINATION: "P0:attribute",
    UNCHANGED_ELEMENT: "P0:attribute",
    MISSING_ATTRIBUTE: "P0:omission",
    OMISSION: "P0:omission",
    WRONG_AMOUNT: "P1:attribute",
    VAGUE_TERMS: "P2:other",
}
#: Operations that change the whole image's lighting: a wrong direction there is a global
#: visual attribute error (P1), not a critical one.
GLOBAL_OPERATIONS = frozenset(("brightness", "tone"))


class ShapesAnnotatorConfig(PluginConfig):
    task: Literal["refine", "prefer", "evaluate"] = Field(
        "refine",
        description="refine: rewrite every instruction; prefer: correct failing instructions "
        "into preferences (chosen = the rewrite, rejected = the model's); evaluate: grade "
        "each instruction with P0/P1/P2 defect codes",
    )
    prefer_below: float = Field(
        5.0,
        ge=1,
        le=5,
        description="prefer: a model instruction whose shapes-rules S is below this is a failure",
    )
    label_studio: Any = Field(
        None,
        description="route the tasks through this Label Studio project (the label-studio "
        "annotator's settings; its task is this one's): the simulated annotator answers them "
        "there as its own user, and the answers are read back as people's are",
    )

    @field_validator("label_studio")
    @classmethod
    def _label_studio_does_this_task(cls, value: Any, info: ValidationInfo) -> Any:
        """``label_studio`` takes its task from ``task`` (not said twice) and becomes the
        label-studio annotator's own config: its errors name the field, and its secrets and
        transport fields are treated as that plugin's are."""
        if value is None or isinstance(value, PluginConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("label_studio: expected a mapping of the label-studio settings")
        if "task" in value:
            raise ValueError("label_studio.task: set `task` instead (the route does that task)")
        from .label_studio import label_studio_config

        return label_studio_config({**value, "task": info.data.get("task", "refine")})


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
    verdict = rules_verdict(item)
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


def evaluate(item: Item) -> list[Item]:
    """The item with a simulated human grade of its instruction: the defect codes of every
    failure mode the rules judge finds (none: correct)."""
    instruction = item.instruction
    if instruction is None:
        raise NotAShapesPair("an evaluate task needs the model's instruction to grade")
    found = rules_verdict(item)
    verdict = Verdict(
        pair_id=item.pair.id,
        instruction_id=instruction.id,
        reference_id=item.reference.id if item.reference else None,
        judge=f"human:{AUTHOR}",
        kind="human",
        labels=defect_codes(found.labels, _operations(item)),
        reasons={"rules": "; ".join(found.labels) or "no failure found"},
        meta={"simulated": True, "task": "evaluate", "rules_score": found.weighted},
    )
    return [item.model_copy(update={"verdict": verdict})]


def defect_codes(failure_modes: Sequence[str], operations: set[str]) -> list[str]:
    """The distinct defect codes for a verdict's failure modes, most severe first."""
    codes = {
        "P1:global"
        if mode == WRONG_DIRECTION and operations and operations <= GLOBAL_OPERATIONS
        else DEFECT_CODES[mode]
        for mode in failure_modes
        if mode in DEFECT_CODES
    }
    return sorted(codes)


def grade(item: Item) -> list[str]:
    """The defect codes a simulated grader ticks for the item's instruction (none: correct)."""
    return defect_codes(rules_verdict(item).labels, _operations(item))


def _operations(item: Item) -> set[str]:
    assert item.reference is not None
    return {str(change.get("operation")) for change in item.reference.meta.get(CHANGES, [])}


def rules_verdict(item: Item) -> Verdict:
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

    def __init__(self, config: ShapesAnnotatorConfig, context: PluginContext) -> None:
        super().__init__(config, context)
        self.route = None
        if config.label_studio is not None:
            from .label_studio import LabelStudioRoute

            self.route = LabelStudioRoute(config.label_studio, context, config.prefer_below)

    def push(self, batch: Sequence[Item]) -> list[str]:
        """Stable ids: pushing the same item again yields the same task."""
        if self.route is not None:
            return self.route.push(batch)
        return [
            f"shapes-{self.config.task}:{item.pair.id[:16]}:"
            f"{item.instruction.id if item.instruction else '-'}"
            for item in batch
        ]

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        if self.route is not None:
            return self.route.pull(tasks)
        out: list[list[Item] | SampleError | None] = []
        for item, _ in tasks:
            try:
                if self.config.task == "refine":
                    out.append(refine(item))
                elif self.config.task == "prefer":
                    out.append(prefer(item, self.config))
                else:
                    out.append(evaluate(item))
            except NotAShapesPair as exc:
                out.append(SampleError.from_exception(exc))
        return out
