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
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import MissingExtraError, PluginError
from .records import Dataset, Instruction, Item, Model, Preference, SampleError, Score, Verdict

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


def require(module: str, extra: str, plugin: str | None = None) -> Any:
    """Import an optional dependency, or say exactly which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module, plugin) from exc


class Plugin(ABC):
    """Common base. Subclasses set ``Config`` and are constructed with a validated config.

    Constructing a plugin must stay cheap; load models or open connections lazily on first use, so
    that ``ecap pipeline validate`` and ``plan`` never pay for them.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    #: Bump when the plugin's output for the same config and input changes (a new prompt, a fix),
    #: so that cached results are recomputed. Part of every cache key, next to the package version.
    revision: ClassVar[str] = "1"

    def __init__(self, config: PluginConfig, context: PluginContext) -> None:
        self.config = config
        self.context = context

    def fingerprint(self) -> str | None:
        """Extra cache-key material that the config alone does not capture (e.g. the hash of the
        file a source reads, or of local model weights). ``None`` when the config says it all."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models, sessions or servers. Called once when the step ends."""


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


class SourceRow(BaseModel):
    """One unit of import work: a stable key (so a killed import resumes) and the raw data."""

    model_config = ConfigDict(frozen=True)

    key: str
    data: dict[str, Any]


class AnnotationSource(Plugin):
    """Yields pairs and whatever they carry: instructions, references, preferences, human labels.

    Used as ``source:`` it reads rows; used as ``annotate:`` it also sends upstream items to humans
    (``push``) and later brings back what they finished (``pull``), and the step waits meanwhile.
    """

    kind = "source"

    @abstractmethod
    def rows(self) -> Iterable[SourceRow]:
        """Cheaply list the rows to import, each with a stable key."""

    @abstractmethod
    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        """Turn rows into items (checking images, hashing bytes)."""

    def push(self, batch: Sequence[Item]) -> list[str]:
        """Send items to humans; return one external task id per item. Must be idempotent."""
        raise NotImplementedError(f"{type(self).__name__} cannot be used as an annotate step")

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        """For each (item, task id) pushed earlier: the finished result, or ``None`` if pending."""
        raise NotImplementedError(f"{type(self).__name__} cannot be used as an annotate step")


class Captioner(Plugin):
    """Pairs -> instructions (possibly several candidates per pair)."""

    kind = "caption"

    caption: Callable[[Sequence[Item]], Sequence[list[Instruction] | SampleError | None]] = _either(
        "caption", "acaption"
    )
    acaption: Callable[
        [Sequence[Item]], Awaitable[Sequence[list[Instruction] | SampleError | None]]
    ] = _async_default("acaption")


class Filter(Plugin):
    """(pair, instruction) -> scores, then a cheap keep/drop decision from those scores.

    ``score`` is the expensive, cached part; ``keep`` must depend only on the score and on config
    fields marked with :func:`decision_field`, so changing a threshold recomputes nothing.
    """

    kind = "filter"

    score: Callable[[Sequence[Item]], Sequence[Score | SampleError | None]] = _either(
        "score", "ascore"
    )
    ascore: Callable[[Sequence[Item]], Awaitable[Sequence[Score | SampleError | None]]] = (
        _async_default("ascore")
    )

    @abstractmethod
    def keep(self, score: Score) -> bool:
        """Decide from a stored score."""


class Judge(Plugin):
    """(pair, instruction, reference) -> verdict."""

    kind = "judge"

    judge: Callable[[Sequence[Item]], Sequence[Verdict | SampleError | None]] = _either(
        "judge", "ajudge"
    )
    ajudge: Callable[[Sequence[Item]], Awaitable[Sequence[Verdict | SampleError | None]]] = (
        _async_default("ajudge")
    )


class Trainer(Plugin):
    """A dataset (frozen by the runner) and a base model -> a new model."""

    kind = "train"

    @abstractmethod
    def train(self, items: Sequence[Item], dataset: Dataset) -> Model:
        """Train on ``items``, which are exactly the rows of ``dataset``."""


class ExportResult(BaseModel):
    uri: str
    format: str


class Exporter(Plugin):
    """Write items somewhere (JSONL, Parquet, HF datasets, annotation tasks)."""

    kind = "export"

    @abstractmethod
    def export(self, items: Sequence[Item], content_hash: str) -> ExportResult:
        """Write ``items``; ``content_hash`` identifies exactly this selection."""


#: Spec kind key -> the interface its plugins implement. ``annotate`` reuses AnnotationSource.
KIND_INTERFACES: dict[str, type[Plugin]] = {
    "source": AnnotationSource,
    "caption": Captioner,
    "filter": Filter,
    "annotate": AnnotationSource,
    "train": Trainer,
    "judge": Judge,
    "export": Exporter,
}
#: Registry kind for each spec kind key (``annotate`` steps use registered sources).
REGISTRY_KIND: dict[str, str] = {k: ("source" if k == "annotate" else k) for k in KIND_INTERFACES}
StepKind = Literal["source", "caption", "filter", "annotate", "train", "judge", "export"]

__all__ = [
    "DECISION",
    "KIND_INTERFACES",
    "REGISTRY_KIND",
    "TRANSPORT",
    "AnnotationSource",
    "Captioner",
    "ExportResult",
    "Exporter",
    "Filter",
    "Judge",
    "Plugin",
    "PluginConfig",
    "PluginContext",
    "Preference",
    "SourceRow",
    "StepKind",
    "Trainer",
    "decision_field",
    "has_async",
    "require",
    "transport_field",
]
