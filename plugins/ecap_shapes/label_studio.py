"""The ``shapes-annotator`` through a Label Studio server, when its config names one.

The tasks are ``annotate: label-studio``'s own (same project layout, same task data, made by that
plugin, which this module reaches through the plugin registry, not by importing it), so a
ShapesEdit run exercises the human loop end to end: the simulated annotator answers
each open task through the server's API as a person's browser would (result items for the
project's controls, a lead time, as its own user :data:`SIMULATED_USER`), and the answers are read
back by the label-studio plugin exactly as it reads people's. The records it makes carry that
user as their author, so provenance keeps telling simulated work from real people's.

What it answers is the simulated annotator's usual work: the reference instruction as the
refinement; for a preference, the best candidate the rules judge passes, else "none" and the
reference rewritten; for a grade, the defect codes of the rules judge's failure modes, at the
most severe level (the labelling view hides P1 and P2 once a P0 is ticked).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ecap.interfaces import PluginConfig, PluginContext
from ecap.plugins import get_registry
from ecap.records import Instruction, Item, SampleError

from .annotator import grade, reference_instruction, rules_verdict

#: The Label Studio user the simulated annotator answers as (created on first use).
SIMULATED_USER = "simulated-shapes-annotator@example.com"
#: Seconds recorded as each answer's lead time (a script answers at once; this is not measured).
LEAD_TIME = 1.0
#: The registered annotator whose tasks these are.
LABEL_STUDIO = ("annotate", "label-studio")
Result = dict[str, Any]


def label_studio_config(settings: dict[str, Any]) -> PluginConfig:
    """``settings`` validated by the label-studio annotator's own config model (its errors name
    the field), through the registry."""
    return get_registry().get(*LABEL_STUDIO).cls.Config.model_validate(settings)


class LabelStudioRoute:
    """Push to, answer in, and pull from one Label Studio project."""

    def __init__(self, config: Any, context: PluginContext, prefer_below: float) -> None:
        self.project: Any = get_registry().get(*LABEL_STUDIO).cls(config, context)
        self.config = config
        self.prefer_below = prefer_below

    def push(self, batch: Sequence[Item]) -> list[str]:
        """Tasks made by the label-studio plugin, then answered there."""
        ids = self.project.push(batch)
        self.answer(batch, ids)
        self.project.refresh()
        return ids

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        return self.project.pull(tasks)

    def answer(self, batch: Sequence[Item], ids: Sequence[str]) -> None:
        """Annotate every task of ``ids`` that nobody has answered yet."""
        client = self.project.client()
        unanswered = {
            str(task["id"]): task
            for task in client.export(self.project.project_id())
            if not task.get("annotations")
        }
        items: dict[str, list[Item]] = defaultdict(list)
        for item, task_id in zip(batch, ids, strict=True):
            if task_id in unanswered:
                items[task_id].append(item)
        if not items:
            return
        user = self._user(client)
        for task_id, answered in items.items():
            result = self.result(unanswered[task_id], answered)
            client.create_annotation(
                int(task_id),
                {
                    "result": [
                        {"id": secrets.token_urlsafe(6), "origin": "manual", **part}
                        for part in result
                    ],
                    "lead_time": LEAD_TIME,
                    "was_cancelled": False,
                    "completed_by": user,
                },
            )

    def result(self, task: dict[str, Any], items: list[Item]) -> list[Result]:
        """What the simulated annotator ticks and types in one task."""
        kind = self.config.task
        if kind == "refine":
            return self._refine(items[0])
        if kind == "prefer":
            return self._prefer(task, items[0])
        return self._evaluate(items[0])

    def _refine(self, item: Item) -> list[Result]:
        text = reference_instruction(item)
        shown = item.instruction.text if item.instruction else ""
        if text == shown:
            return [self._choices("quality", "instruction", ["accurate"])]
        return [
            self._text("refined", "instruction", text),
            self._choices("quality", "instruction", ["needs_fix"]),
        ]

    def _prefer(self, task: dict[str, Any], item: Item) -> list[Result]:
        """The best candidate that passes the rules, else none of them and a rewrite."""
        data = task["data"]
        letters = [option["value"] for option in data["options"]][: len(data["candidates"])]
        scored = [
            (rules_verdict(_with_text(item, text)).weighted or 0.0, letter)
            for letter, text in zip(letters, data["candidates"], strict=True)
        ]
        best_score, best = max(scored, key=lambda pair: pair[0])
        if best_score >= self.prefer_below:
            return [self._choices("best", "target", [best])]
        return [
            self._choices("best", "target", ["none"]),
            self._text("rewrite", "target", reference_instruction(item)),
        ]

    def _evaluate(self, item: Item) -> list[Result]:
        """The checklist's codes at the most severe level, ticked by their aliases (the codes
        themselves), which label-studio reads as the choices they name."""
        codes = grade(item)
        if not codes:
            return [self._choices("verdict", "instruction", ["correct"])]
        level = min(code.split(":")[0] for code in codes)  # "P0" < "P1" < "P2"
        worst = [code for code in codes if code.startswith(level + ":")]
        return [
            self._choices("verdict", "instruction", ["defective"]),
            self._choices(level.lower(), "instruction", worst),
        ]

    def _control(self, name: str) -> str:
        return self.config.controls.get(name, name)

    def _text(self, name: str, to_name: str, text: str) -> Result:
        return {
            "from_name": self._control(name),
            "to_name": to_name,
            "type": "textarea",
            "value": {"text": [text]},
        }

    def _choices(self, name: str, to_name: str, choices: list[str]) -> Result:
        return {
            "from_name": self._control(name),
            "to_name": to_name,
            "type": "choices",
            "value": {"choices": choices},
        }

    @staticmethod
    def _user(client: Any) -> int:
        users = {email: uid for uid, email in client.users().items()}
        return users.get(SIMULATED_USER) or client.create_user(SIMULATED_USER)


def _with_text(item: Item, text: str) -> Item:
    return item.model_copy(
        update={"instruction": Instruction(pair_id=item.pair.id, text=text, origin="model")}
    )


__all__ = ["SIMULATED_USER", "LabelStudioRoute"]
