"""Turning resolved annotations into ecap records, with their lineage.

- **refine**: an :class:`Instruction` with ``origin="human"``, ``parent_id`` = the model's
  instruction, ``author`` = the annotator; ``meta`` keeps the quality choice and whether the text
  was edited. An ``unusable`` answer produces nothing.
- **prefer**: for each rejected candidate, a :class:`Preference` (chosen, rejected). A rewrite
  becomes a new human instruction that is preferred over every candidate; its parent is the
  candidate picked alongside it, else the first candidate shown (option A, the one the annotator
  read first), so every human instruction derives from a model instruction. A picked candidate is
  preferred over the others; a tie produces nothing. The output item carries the chosen
  instruction and the preference, whose ``meta`` holds both texts.
- **evaluate**: a :class:`Verdict` with ``kind="human"``, ``judge="human:<annotator>"`` and
  ``labels`` = the defect codes at the graded severity (``[]`` for a correct instruction): what
  ``ecap report`` reads for its P0/P1/P2 table.

Every record's ``meta["label_studio"]`` names the task, the annotation, its annotator, timestamps
and lead time, the resolution rule, and a summary of every annotation of the task, skipped ones
included. Ids are ULIDs made of the annotation's time (when it was last saved) and a hash of
the pair, the task id, the annotation id and the control the record comes from, nothing else:
reading the same annotation twice (through the API, from a JSON or a JSON_MIN export) gives the
same records, and ids sort by annotation time, so "the latest human verdict" is the latest
annotation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ulid import ULID

from ecap.hashing import canonical_json
from ecap.records import Instruction, Item, Preference, Verdict

from .annotations import Annotation, Decision, ExportedTask, Resolution, Resolved
from .configs import TaskKind


def stable_id(when: datetime, *parts: Any) -> str:
    """A ULID whose time is ``when`` and whose random part is a hash of ``parts``."""
    millis = max(0, int(when.timestamp() * 1000))
    entropy = hashlib.sha256(canonical_json(parts).encode()).digest()[:10]
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + entropy))


class RecordBuilder:
    """Builds the output items of one task for one input item."""

    def __init__(self, kind: TaskKind, rule: Resolution, origin: str) -> None:
        self.kind = kind
        self.rule = rule
        self.origin = origin  # "project 12" or "file refine.json": where the answers came from

    def items(
        self,
        item: Item,
        task: ExportedTask,
        resolved: Resolved,
        candidates: Sequence[Instruction] = (),
    ) -> list[Item]:
        """The outputs for ``item``; ``candidates`` are what a prefer task showed, in order."""
        if self.kind == "refine":
            return self._refine(item, task, resolved)
        if self.kind == "evaluate":
            return self._evaluate(item, task, resolved)
        return self._prefer(item, task, resolved, candidates)

    @staticmethod
    def record_id(item: Item, task: ExportedTask, annotation: Annotation, *control: str) -> str:
        """The id of what ``control`` of ``annotation`` says about ``item``'s pair: the same in
        every export format, since it uses nothing a format may leave out."""
        return stable_id(annotation.when, item.pair.id, task.id, annotation.id, *control)

    def meta(self, task: ExportedTask, annotation: Annotation, **extra: Any) -> dict[str, Any]:
        return {
            "label_studio": {
                "origin": self.origin,
                "task": task.id,
                **annotation.summary(),
                "resolution": self.rule,
                "annotations": [a.summary() for a in task.annotations],
            },
            **extra,
        }

    def _refine(self, item: Item, task: ExportedTask, resolved: Resolved) -> list[Item]:
        model = item.instruction
        assert model is not None
        out = []
        for annotation, decision in resolved.chosen:
            if decision.text is None:  # unusable: nothing to keep
                continue
            human = Instruction(
                id=self.record_id(item, task, annotation, "refined"),
                pair_id=item.pair.id,
                text=decision.text,
                origin="human",
                parent_id=model.id,
                author=annotation.annotator,
                meta=self.meta(
                    task,
                    annotation,
                    quality=decision.quality,
                    edited=decision.text != " ".join(model.text.split()),
                ),
            )
            out.append(_with(item, instruction=human))
        return out

    def _evaluate(self, item: Item, task: ExportedTask, resolved: Resolved) -> list[Item]:
        instruction = item.instruction
        assert instruction is not None
        out = []
        for annotation, decision in resolved.chosen:
            verdict = Verdict(
                id=self.record_id(item, task, annotation, "verdict"),
                pair_id=item.pair.id,
                instruction_id=instruction.id,
                reference_id=item.reference.id if item.reference else None,
                judge=f"human:{annotation.annotator}",
                kind="human",
                labels=list(decision.codes),
                reasons={"comment": decision.comment} if decision.comment else {},
                meta=self.meta(task, annotation, grade=decision.key[0]),
            )
            out.append(item.model_copy(update={"verdict": verdict}))
        return out

    def _prefer(
        self,
        item: Item,
        task: ExportedTask,
        resolved: Resolved,
        candidates: Sequence[Instruction],
    ) -> list[Item]:
        rejected = item.instruction
        assert rejected is not None
        out = []
        for annotation, decision in resolved.chosen:
            chosen = self._chosen(item, task, annotation, decision, candidates)
            if chosen is None or chosen.id == rejected.id:
                continue
            preference = Preference(
                id=self.record_id(item, task, annotation, "best", rejected.id),
                pair_id=item.pair.id,
                chosen_id=chosen.id,
                rejected_id=rejected.id,
                meta=self.meta(
                    task, annotation, chosen_text=chosen.text, rejected_text=rejected.text
                ),
            )
            out.append(_with(item, instruction=chosen, preference=preference))
        return out

    def _chosen(
        self,
        item: Item,
        task: ExportedTask,
        annotation: Annotation,
        decision: Decision,
        candidates: Sequence[Instruction],
    ) -> Instruction | None:
        if decision.text is not None:  # a rewrite beats every candidate
            # Its parent: the candidate picked with it, else the first one shown (option A).
            parent = candidates[decision.pick if decision.pick is not None else 0]
            return Instruction(
                id=self.record_id(item, task, annotation, "rewrite"),
                pair_id=item.pair.id,
                text=decision.text,
                origin="human",
                parent_id=parent.id,
                author=annotation.annotator,
                meta=self.meta(task, annotation),
            )
        if decision.pick is not None:
            return candidates[decision.pick]
        return None  # a tie


def _with(item: Item, **slots: Any) -> Item:
    """``item`` carrying new records; scores and verdicts of the old instruction do not apply."""
    return item.model_copy(update={"score": None, "verdict": None, "preference": None, **slots})


__all__ = ["RecordBuilder", "stable_id"]
