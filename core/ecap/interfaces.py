"""The plugin kinds: one abstract interface each, with a pydantic config model.

Interfaces are batch-first: the runner hands a plugin a list and gets back one result per element,
in order. A result is either the plugin's output or a :class:`~ecap.records.SampleError` for that
sample alone. Raising an exception instead means "this whole batch failed, maybe transiently": the
runner retries it and, when retries run out, records every sample of the batch as failed.

A result may also be ``None``: the work is pending outside the process (a batch-API job, humans);
the step then waits, and a later run asks again.

Network-bound plugins may implement the ``a``-prefixed coroutine (``acaption``, ``ascore``,
``ajudge``) instead; the runner then runs several batches concurrently. Batching, concurrency,
retries and progress belong to the runner, never to a plugin.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import MissingExtraError, PluginError
from .records import (
    Dataset,
    Instruction,
    Item,
    Model,
    Preference,
    Record,
    SampleError,
    Score,
    Verdict,
)

#: Marks a config field that changes only how fast or how robustly work is done (concurrency,
#: timeouts, retries, batch size). Such fields never enter a cache key.
TRANSPORT = "transport"
#: Marks a config field that only turns stored numbers into a keep/drop decision (thresholds).
#: Such fields never enter a cache key either: re-thresholding is a query, not a re-run.
DECISION = "decision"


def transport_field(default: Any, **kwargs: Any) -> Any:
    """A config field excluded from cache keys because it only affects throughput."""
    return Field(default, json_schema_extra={"ecap_role": TRANSPORT}, **kwargs)


def decision_field(default: Any, **kwargs: Any) -> Any:
    """A config field excluded from score cache keys because it only decides keep/drop."""
    return Field(default, json_schema_extra={"ecap_role": DECISION}, **kwargs)


class PluginConfig(BaseModel):
    """Base of every plugin's ``with:`` block. Unknown fields are errors, with the field named."""

    model_config = ConfigDict(extra="forbid")


class PluginContext(BaseModel):
    """What a plugin may know about where it runs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step_id: str
    base_dir: Path  # relative paths in a spec resolve against the spec's folder
    work_dir: Path  # where a step may write files (exports, checkpoints)
    limit: int | None = None
    logger: logging.Logger = Field(default_factory=lambda: logging.getLogger("ecap.plugin"))
    #: The store's call log (``ecap.calls.CallLog``): ask it before a paid call, write to it after.
    calls: Any = None
    #: Records already in the store: ``records(record_type, ids) -> {id: record}`` (missing ids
    #: left out), for plugins that meet ids of records written by other steps or batches.
    records: Any = None
    #: Store records that a step needs for lineage but does not output as items:
    #: ``save_records(records)``, committed at once (a record already stored is left as it is).
    save_records: Any = None
    #: ``resolve_model(ref) -> ecap.models.ResolvedModel``: a config field naming a model (a hub
    #: id, a local path or ``{step: NAME}``) made concrete. The runner resolves ``{step: NAME}``
    #: to the model that train step produced; outside a run only paths and hub ids resolve.
    resolve_model: Any = None
    #: ``log_metrics(step, values)``: numbers a long job reports as it goes (a training's loss per
    #: logging step), stored with the step run. ``None`` outside a run.
    log_metrics: Any = None

    def model(self, ref: Any) -> Any:
        """``ref`` resolved: through the run's resolver when there is one, else as a path or id."""
        if self.resolve_model is not None:
            return self.resolve_model(ref)
        from .models import resolve_model

        return resolve_model(ref, self.base_dir)


def require(module: str, extra: str, plugin: str | None = None) -> Any:
    """Import an optional dependency, or say exactly which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module, plugin) from exc


class SourceRow(BaseModel):
    """One unit of import work: a stable key (so a killed import resumes) and the raw data."""

    model_config = ConfigDict(frozen=True)

    key: str
    data: dict[str, Any]


#: How the runner drives a kind: per sample in batches, over the whole input at once, or by
#: pushing work to humans and pulling back what they finished.
Shape = Literal["per_sample", "whole_input", "human"]


@dataclass(frozen=True)
class KindContract:
    """Everything the rest of ecap needs to know about a plugin kind, declared once by its
    interface (``contract = KindContract(...)`` in the class body).

    The hookspecs, the registry, spec validation, the runner, the planner and ``ecap plugins``
    all read this, so adding a kind is writing one interface class.
    """

    key: str  # the spec's kind key (``caption: vlm``) and the registry's kind
    hook: str  # the registration hook: ``register_captioners(register)``
    method: str  # what the runner calls with a batch (or the whole input)
    shape: Shape
    async_method: str | None = None  # coroutine variant a network-bound plugin may implement
    #: The item slot a result fills (per-sample kinds), ``None`` when results are items already.
    output_slot: str | None = None
    #: Slots a new result makes stale: a new instruction has no score or verdict yet.
    clears: tuple[str, ...] = ()
    takes_input: bool = True  # False: the step reads its own input and takes no ``from:``
    #: The record a whole-input step makes of its inputs (``model``, ``dataset``), which later
    #: steps can name: ``model: {step: NAME}`` must name a step that produces a model.
    produces: str | None = None
    #: Its input becomes a model's training data: the runner keeps pairs the store holds out
    #: for testing away from it (:mod:`ecap.datasets`).
    trains: bool = False
    summary: str = ""  # one line for docs and ``ecap plugins``


#: Spec kind key -> interface, filled by every interface that declares a contract.
KINDS: dict[str, type[Plugin]] = {}


class Plugin(ABC):
    """Common base. Subclasses set ``Config`` and are constructed with a validated config.

    Constructing a plugin must stay cheap; load models or open connections lazily on first use, so
    that ``ecap pipeline validate`` and ``plan`` never pay for them.
    """

    contract: ClassVar[KindContract]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    #: Bump when the plugin's output for the same config and input changes (a new prompt, a fix),
    #: so that cached results are recomputed. Part of every cache key, next to the package version.
    revision: ClassVar[str] = "1"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "contract" in cls.__dict__:
            KINDS[cls.contract.key] = cls

    def __init__(self, config: PluginConfig, context: PluginContext) -> None:
        self.config = config
        self.context = context

    def fingerprint(self) -> str | None:
        """Extra cache-key material that the config alone does not capture (e.g. the hash of the
        file a source reads, or of local model weights). ``None`` when the config says it all."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models, sessions or servers. Called once when the step ends."""

    def check(self) -> list[str]:
        """Problems found without doing any work (an input file that does not exist), so that
        ``ecap pipeline validate`` and the start of a run report them before anything is paid
        for. Must stay cheap: no model loads, no network calls."""
        return []

    def attach(self, item: Item, result: Any) -> list[Item]:
        """The items a step emits for ``item`` given the plugin's ``result`` for it: the result
        in the kind's output slot, the slots it makes stale cleared, everything else passed on."""
        slot = self.contract.output_slot
        results = result if isinstance(result, list) else [result]
        if slot is None:
            return results
        cleared = dict.fromkeys(self.contract.clears)
        return [item.model_copy(update={**cleared, slot: r}) for r in results]

    def select(self, items: list[Item]) -> tuple[list[Item], dict[str, int]]:
        """The step's outputs after any decision taken over all of them, and counts to report.
        Called on every run with cached and fresh outputs alike; most kinds keep everything."""
        return items, {}


class Source(Plugin):
    """Imports pairs and whatever a file carries: instructions, references, preferences, labels."""

    contract = KindContract(
        key="source",
        hook="register_sources",
        method="load",
        shape="per_sample",
        takes_input=False,
        summary="imports pairs (and the records a file carries) from outside",
    )

    @abstractmethod
    def rows(self) -> Iterable[SourceRow]:
        """Cheaply list the rows to import, each with a stable key."""

    @abstractmethod
    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        """Turn rows into items (checking images, hashing bytes)."""


class Annotator(Plugin):
    """A human step: sends items to people and later brings back what they finished.

    The step waits while work is out; each later run pulls again. ``push`` must be idempotent
    (the runner stores task ids before pulling, but a crash between the two pushes again).
    """

    contract = KindContract(
        key="annotate",
        hook="register_annotators",
        method="pull",
        shape="human",
        summary="sends items to humans and imports what they finished",
    )

    @abstractmethod
    def push(self, batch: Sequence[Item]) -> list[str]:
        """Send items to humans; return one external task id per item."""

    @abstractmethod
    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        """For each (item, task id) pushed earlier: the finished result as items (possibly none,
        when the human skipped it), a failure, or ``None`` while the task still waits."""


def _either(sync: str, asynchronous: str) -> Any:
    """Default for a method a plugin must implement in its sync or its async variant."""

    def missing(self: Plugin, batch: Any) -> Any:
        raise PluginError(f"{type(self).__name__} implements neither {sync}() nor {asynchronous}()")

    missing.ecap_default = True  # type: ignore[attr-defined]
    return missing


def _async_default(name: str) -> Any:
    async def missing(self: Plugin, batch: Any) -> Any:
        raise PluginError(f"{type(self).__name__} does not implement {name}()")

    missing.ecap_default = True  # type: ignore[attr-defined]
    return missing


def has_async(plugin: Plugin, method: str) -> bool:
    """Whether ``plugin`` implements the coroutine variant ``method`` itself."""
    fn = getattr(plugin, method, None)
    return inspect.iscoroutinefunction(fn) and not getattr(fn, "ecap_default", False)


class Captioner(Plugin):
    """Pairs -> instructions (possibly several candidates per pair)."""

    contract = KindContract(
        key="caption",
        hook="register_captioners",
        method="caption",
        async_method="acaption",
        shape="per_sample",
        output_slot="instruction",
        clears=("score", "verdict", "preference"),
        summary="writes editing instructions for pairs",
    )

    caption: Callable[[Sequence[Item]], Sequence[list[Instruction] | SampleError | None]] = _either(
        "caption", "acaption"
    )
    acaption: Callable[
        [Sequence[Item]], Awaitable[Sequence[list[Instruction] | SampleError | None]]
    ] = _async_default("acaption")


class KeepDecision(BaseModel):
    """A filter's verdict on one scored item, with the reason when it is dropped."""

    model_config = ConfigDict(frozen=True)

    keep: bool
    reason: str = ""


class Filter(Plugin):
    """(pair, instruction) -> scores, then a cheap keep/drop decision from those scores.

    ``score`` is the expensive, cached part. ``decide`` sees the scores of every item the step
    outputs at once (a top-k or percentile rule needs the whole population) and must depend only
    on them and on config fields marked with :func:`decision_field`, so changing a threshold
    recomputes nothing: the runner re-decides from stored scores on every run.
    """

    contract = KindContract(
        key="filter",
        hook="register_filters",
        method="score",
        async_method="ascore",
        shape="per_sample",
        output_slot="score",
        summary="scores (pair, instruction) and keeps or drops it",
    )

    score: Callable[[Sequence[Item]], Sequence[Score | SampleError | None]] = _either(
        "score", "ascore"
    )
    ascore: Callable[[Sequence[Item]], Awaitable[Sequence[Score | SampleError | None]]] = (
        _async_default("ascore")
    )

    def keep(self, score: Score) -> bool:
        """Decide from one stored score (filters whose rule looks at one score at a time)."""
        raise PluginError(f"{type(self).__name__} implements neither keep() nor decide()")

    def decide(self, items: Sequence[Item]) -> list[KeepDecision]:
        """Decide for every scored item of the step at once; by default ``keep`` one by one."""
        return [
            KeepDecision(keep=True)
            if item.score is None
            else KeepDecision(keep=self.keep(item.score), reason="rejected by keep()")
            for item in items
        ]

    def select(self, items: list[Item]) -> tuple[list[Item], dict[str, int]]:
        decisions = self.decide(items)
        if len(decisions) != len(items):
            raise PluginError(
                f"{type(self).__name__}.decide returned {len(decisions)} decisions "
                f"for {len(items)} items"
            )
        kept = [item for item, d in zip(items, decisions, strict=True) if d.keep]
        return kept, {"kept": len(kept), "dropped": len(items) - len(kept)}


class Judge(Plugin):
    """(pair, instruction, reference) -> verdict."""

    contract = KindContract(
        key="judge",
        hook="register_judges",
        method="judge",
        async_method="ajudge",
        shape="per_sample",
        output_slot="verdict",
        summary="grades instructions against references",
    )

    judge: Callable[[Sequence[Item]], Sequence[Verdict | SampleError | None]] = _either(
        "judge", "ajudge"
    )
    ajudge: Callable[[Sequence[Item]], Awaitable[Sequence[Verdict | SampleError | None]]] = (
        _async_default("ajudge")
    )


class Trainer(Plugin):
    """A dataset (frozen by the runner) and a base model -> a new model."""

    contract = KindContract(
        key="train",
        hook="register_trainers",
        method="train",
        shape="whole_input",
        produces="model",
        trains=True,
        summary="trains a model on the frozen dataset of its inputs",
    )

    def held_out_policy(self) -> Literal["refuse", "leave_out"]:
        """What the runner does with input pairs the store holds out for testing: ``refuse``
        fails the step before training (the default: a leak is a mistake in the spec), and
        ``leave_out`` trains without them, recording how many were left out."""
        return "refuse"

    @abstractmethod
    def train(self, items: Sequence[Item], dataset: Dataset) -> Model:
        """Train on ``items``, which are exactly the rows of ``dataset``."""

    def produce(self, items: Sequence[Item], dataset: Dataset) -> list[Record]:
        """What the runner stores: the dataset, and the model trained on it."""
        model = self.train(items, dataset)
        if model.dataset_id is None:
            model = model.model_copy(update={"dataset_id": dataset.id})
        return [dataset, model]


class ExportResult(BaseModel):
    uri: str
    format: str


class Exporter(Plugin):
    """Write items somewhere (JSONL, Parquet, HF datasets, annotation tasks)."""

    contract = KindContract(
        key="export",
        hook="register_exporters",
        method="export",
        shape="whole_input",
        produces="dataset",
        summary="writes its inputs to files",
    )

    @abstractmethod
    def export(self, items: Sequence[Item], content_hash: str) -> ExportResult:
        """Write ``items``; ``content_hash`` identifies exactly this selection."""

    def produce(self, items: Sequence[Item], dataset: Dataset) -> list[Record]:
        """What the runner stores: the dataset, with where and how it was written."""
        result = self.export(items, dataset.content_hash)
        return [dataset.model_copy(update={"uri": result.uri, "format": result.format})]


StepKind = Literal["source", "caption", "filter", "annotate", "train", "judge", "export"]

__all__ = [
    "DECISION",
    "KINDS",
    "TRANSPORT",
    "Annotator",
    "Captioner",
    "ExportResult",
    "Exporter",
    "Filter",
    "Judge",
    "KeepDecision",
    "KindContract",
    "Plugin",
    "PluginConfig",
    "PluginContext",
    "Preference",
    "Source",
    "SourceRow",
    "StepKind",
    "Trainer",
    "decision_field",
    "has_async",
    "require",
    "transport_field",
]
