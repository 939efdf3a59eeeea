"""Fake plugins with scripted outputs and a call history.

Each fake records every batch it receives in ``<Class>.calls`` (a list of lists of pair ids), and,
when its config names a ``history_file``, appends one JSON line per sample there too, so a test can
count calls made by a pipeline running in another process (one that is killed, say).

Outputs are scripted by config, keyed by a pair's category or by a prefix of its id, so that they
stay the same whatever the batching or the order of work.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ..hookspecs import Register, hookimpl
from ..interfaces import (
    Annotator,
    Captioner,
    Filter,
    Judge,
    PluginConfig,
    Trainer,
    decision_field,
    transport_field,
)
from ..models import ModelRef
from ..records import Dataset, Instruction, Item, Model, SampleError, Score, Verdict


class FakeConfig(PluginConfig):
    replies: dict[str, str] = Field(
        default_factory=dict, description="category or pair-id prefix -> scripted output"
    )
    fail: list[str] = Field(
        default_factory=list, description="categories or pair-id prefixes whose samples fail"
    )
    raise_first: int = transport_field(0, description="first N batch calls raise ConnectionError")
    delay: float = transport_field(0.0, description="seconds each batch call takes")
    history_file: str | None = transport_field(None, description="append calls here (JSON lines)")


class _Scripted:
    """What every fake shares: scripted lookups, failures, delays and the call history."""

    calls: ClassVar[list[list[str]]]
    config: FakeConfig
    _lock = threading.Lock()
    _raised: ClassVar[int]

    def _record(self, batch: Sequence[Item], sleep: bool = True) -> None:
        ids = [item.pair.id for item in batch]
        with self._lock:
            type(self).calls.append(ids)
            if self.config.history_file:
                with Path(self.config.history_file).open("a") as out:
                    for pair_id in ids:
                        out.write(
                            json.dumps({"plugin": type(self).__name__, "pair": pair_id}) + "\n"
                        )
            if type(self)._raised < self.config.raise_first:
                type(self)._raised += 1
                raise ConnectionError(
                    f"scripted failure {type(self)._raised} of {self.config.raise_first}"
                )
        if sleep and self.config.delay:
            time.sleep(self.config.delay)

    def _lookup(self, item: Item, table: dict[str, str]) -> str | None:
        for key, value in table.items():
            if key == item.pair.category or item.pair.id.startswith(key):
                return value
        return None

    def _failed(self, item: Item) -> SampleError | None:
        if self._lookup(item, dict.fromkeys(self.config.fail, "x")):
            return SampleError(error_type="ScriptedFailure", message=f"pair {item.pair.id[:12]}")
        return None


class FakeCaptionerConfig(FakeConfig):
    template: str = Field("Edit the {category} image.", description="text when no reply matches")
    candidates: int = Field(1, ge=1)
    model: ModelRef | None = Field(
        None, description="a model to name as the author (e.g. {step: NAME}); never loaded"
    )


class FakeCaptioner(_Scripted, Captioner):
    """Writes ``replies[category]`` (or ``template``) as the instruction, ``candidates`` times."""

    Config = FakeCaptionerConfig
    config: FakeCaptionerConfig
    calls: ClassVar[list[list[str]]] = []
    _raised: ClassVar[int] = 0

    def caption(self, batch: Sequence[Item]) -> list[list[Instruction] | SampleError]:
        self._record(batch)
        out: list[list[Instruction] | SampleError] = []
        for item in batch:
            if error := self._failed(item):
                out.append(error)
                continue
            text = self._lookup(item, self.config.replies) or self.config.template.format(
                category=item.pair.category, pair_id=item.pair.id
            )
            out.append(
                [
                    Instruction(
                        pair_id=item.pair.id,
                        text=text,
                        origin="model",
                        author=self._author(),
                        candidate=n,
                    )
                    for n in range(self.config.candidates)
                ]
            )
        return out

    def _author(self) -> str:
        if self.config.model is None:
            return "fake"
        return f"fake:{self.context.model(self.config.model).path}"


class FakeFilterConfig(FakeConfig):
    default_score: float = 5.0
    min_score: float = decision_field(0.0, description="keep items scoring at least this")


class FakeFilter(_Scripted, Filter):
    """Scores ``float(replies[category])`` (or ``default_score``); keeps scores >= min_score."""

    Config = FakeFilterConfig
    config: FakeFilterConfig
    calls: ClassVar[list[list[str]]] = []
    _raised: ClassVar[int] = 0

    def score(self, batch: Sequence[Item]) -> list[Score | SampleError]:
        self._record(batch)
        out: list[Score | SampleError] = []
        for item in batch:
            if error := self._failed(item):
                out.append(error)
                continue
            value = float(self._lookup(item, self.config.replies) or self.config.default_score)
            out.append(
                Score(
                    pair_id=item.pair.id,
                    instruction_id=item.instruction.id if item.instruction else None,
                    scorer="fake",
                    values={"score": value},
                )
            )
        return out

    def keep(self, score: Score) -> bool:
        return score.values["score"] >= self.config.min_score


class FakeJudgeConfig(FakeConfig):
    axes: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 4.0, "completeness": 4.0, "clarity": 5.0}
    )


class FakeJudge(_Scripted, Judge):
    """An async judge: returns ``axes`` and their 0.4/0.4/0.2 weighted S, after ``delay``."""

    Config = FakeJudgeConfig
    config: FakeJudgeConfig
    calls: ClassVar[list[list[str]]] = []
    _raised: ClassVar[int] = 0
    in_flight: ClassVar[int] = 0
    max_in_flight: ClassVar[int] = 0

    async def ajudge(self, batch: Sequence[Item]) -> list[Verdict | SampleError]:
        cls = type(self)
        cls.in_flight += 1
        cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        try:
            self._record(batch, sleep=False)
            await asyncio.sleep(self.config.delay)
        finally:
            cls.in_flight -= 1
        axes = self.config.axes
        weights = {"accuracy": 0.4, "completeness": 0.4, "clarity": 0.2}
        weighted = sum(axes.get(a, 0.0) * w for a, w in weights.items())
        out: list[Verdict | SampleError] = []
        for item in batch:
            out.append(
                self._failed(item)
                or Verdict(
                    pair_id=item.pair.id,
                    instruction_id=item.instruction.id if item.instruction else None,
                    reference_id=item.reference.id if item.reference else None,
                    judge="fake",
                    axes=axes,
                    weighted=round(weighted, 4),
                )
            )
        return out


class FakeAnnotatorConfig(PluginConfig):
    answers_file: str = transport_field(
        ..., description="JSON object: task id -> corrected text; written by the 'humans'"
    )


class FakeAnnotator(Annotator):
    """Simulated humans for ``annotate:`` steps. ``push`` hands out task ids derived from the item,
    so pushing twice is harmless; ``pull`` returns a human instruction, parented to the model's,
    for every task that ``answers_file`` answers, nothing for an empty answer (a skipped task), and
    ``None`` (still pending) for the rest."""

    Config = FakeAnnotatorConfig
    config: FakeAnnotatorConfig
    pushed: ClassVar[list[str]] = []

    def push(self, batch: Sequence[Item]) -> list[str]:
        ids = [
            f"task-{item.pair.id[:16]}-{item.instruction.id if item.instruction else ''}"
            for item in batch
        ]
        type(self).pushed.extend(ids)
        return ids

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        path = Path(self.config.answers_file)
        answers = json.loads(path.read_text()) if path.exists() else {}
        out: list[list[Item] | SampleError | None] = []
        for item, task_id in tasks:
            answer = answers.get(task_id)
            if answer is None:
                out.append(None)
            elif answer == "":  # the annotator skipped the task: finished, producing nothing
                out.append([])
            else:
                out.append(
                    [
                        item.model_copy(
                            update={
                                "instruction": Instruction(
                                    pair_id=item.pair.id,
                                    text=answer,
                                    origin="human",
                                    author="annotator-1",
                                    parent_id=item.instruction.id if item.instruction else None,
                                )
                            }
                        )
                    ]
                )
        return out


class FakeTrainerConfig(PluginConfig):
    base_model: str = Field("fake-base", description="recorded as the model's base")
    fail: bool = Field(False, description="raise instead of training (a failed training)")
    held_out: Literal["refuse", "leave_out"] = Field(
        "refuse", description="what to do with input pairs held out for testing"
    )


class FakeTrainer(Trainer):
    """Trains nothing: writes a folder holding the dataset's rows (pair id and instruction text)
    and returns a Model pointing at it, so tests can check exactly what a train step was given.
    ``FakeTrainer.calls`` lists the pair ids of every training."""

    Config = FakeTrainerConfig
    config: FakeTrainerConfig
    calls: ClassVar[list[list[str]]] = []

    def held_out_policy(self) -> Literal["refuse", "leave_out"]:
        return self.config.held_out

    def train(self, items: Sequence[Item], dataset: Dataset) -> Model:
        type(self).calls.append([item.pair.id for item in items])
        if self.config.fail:
            raise RuntimeError("the fake training failed, as configured")
        folder = self.context.work_dir / "model"
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            {"pair": item.pair.id, "text": item.instruction.text if item.instruction else None}
            for item in items
        ]
        (folder / "rows.json").write_text(json.dumps(rows, indent=1))
        base = self.context.model(self.config.base_model)
        self.context.log_metrics and self.context.log_metrics(1, {"loss": float(len(rows))})
        return Model(
            name=f"fake-{self.context.step_id}",
            uri=str(folder),
            base_model_id=base.record_id,
            meta={"base": base.path, "rows": len(rows), "content_hash": dataset.content_hash},
        )


FAKES = (FakeCaptioner, FakeFilter, FakeJudge, FakeAnnotator, FakeTrainer)


def reset_fakes() -> None:
    """Forget every fake's call history."""
    for cls in (FakeCaptioner, FakeFilter, FakeJudge):
        cls.calls = []
        cls._raised = 0
    FakeJudge.in_flight = FakeJudge.max_in_flight = 0
    FakeAnnotator.pushed = []
    FakeTrainer.calls = []


class FakePlugins:
    """Registers every fake as ``fake``, through the ordinary hooks."""

    @hookimpl
    def register_captioners(self, register: Register) -> None:
        register("fake", FakeCaptioner)

    @hookimpl
    def register_filters(self, register: Register) -> None:
        register("fake", FakeFilter)

    @hookimpl
    def register_judges(self, register: Register) -> None:
        register("fake", FakeJudge)

    @hookimpl
    def register_annotators(self, register: Register) -> None:
        register("fake", FakeAnnotator)

    @hookimpl
    def register_trainers(self, register: Register) -> None:
        register("fake", FakeTrainer)
