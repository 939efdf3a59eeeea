"""Report sections: what a plugin adds to ``ecap report``, and how a report is built from them.

A section is a class with one method, :meth:`ReportSection.tables`, that reads verdicts through
its :class:`ReportContext` (never the store's tables) and returns :class:`~ecap.report.Table`
objects; the formatters do the rest. A plugin registers its sections with the
``register_report_sections(register)`` hook, by name and lazily::

    @hookimpl
    def register_report_sections(register):
        register("cost", "my_plugin.report:CostSection")

Sections appear in the order of their :attr:`~ReportSection.order`, then of their names. One
section may build on another's work through :meth:`ReportContext.shared`, which computes a value
once per report (the judges' sections share the latest verdict per instruction this way).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..errors import EcapError
from . import query
from .stats import Stat, bootstrap_mean, generator
from .table import Report, Table

if TYPE_CHECKING:
    from ..store import Store

T = TypeVar("T")
HumanPolicy = Literal["latest", "worst"]


def split_label(value: str) -> tuple[str, str]:
    """``"LABEL=ID"`` -> (label, id); a bare ``"ID"`` is its own label."""
    label, sep, ref = value.rpartition("=")
    if sep and label.strip() and ref.strip():
        return label.strip(), ref.strip()
    return value.strip(), value.strip()


@dataclass(frozen=True)
class ReportOptions:
    """What ``ecap report`` was asked. ``runs`` and ``steps`` select judge verdicts and may be
    ``LABEL=ID`` (labels name the rows of comparisons); ``human_runs`` and ``human_steps`` select
    human verdicts apart, because humans usually grade in another step, often in a later run."""

    judge: str | None = None
    runs: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    human_runs: tuple[str, ...] = ()
    human_steps: tuple[str, ...] = ()
    human: HumanPolicy = "latest"
    seed: int = 0
    resamples: int = 1000
    confidence: float = 0.95

    def check(self) -> None:
        if not 0 < self.confidence < 1:
            raise EcapError(f"confidence must be between 0 and 1, not {self.confidence}")
        if self.human not in ("latest", "worst"):
            raise EcapError(f"human policy must be 'latest' or 'worst', not '{self.human}'")

    @staticmethod
    def ids(refs: Sequence[str]) -> list[str]:
        return [split_label(r)[1] for r in refs]


class ReportContext:
    """What a section reads: the selected verdicts, the options, and a place for notes."""

    def __init__(self, store: Store, options: ReportOptions) -> None:
        self.store = store
        self.options = options
        self.notes: list[str] = []
        #: Report-wide facts for JSON and the summary line (``judge``, ``models`` ...).
        self.meta: dict[str, Any] = {}
        self._shared: dict[str, Any] = {}

    def verdicts(self) -> list[query.VerdictFact]:
        """Every selected verdict, judge and human, read once per report."""
        return self.shared("ecap.verdicts", self._read)

    def _read(self) -> list[query.VerdictFact]:
        o, ids = self.options, ReportOptions.ids
        return query.verdicts(
            self.store,
            judge=o.judge,
            runs=ids(o.runs),
            steps=ids(o.steps),
            human_runs=ids(o.human_runs),
            human_steps=ids(o.human_steps),
        )

    def scores(self, scorer: str | None = None) -> list[query.ScoreFact]:
        """Every filter score from ``scorer`` (all scorers by default), read once per report."""
        return self.shared(
            f"ecap.scores:{scorer or ''}", lambda: query.scores(self.store, scorer=scorer)
        )

    def judges_in_store(self) -> Counter[str]:
        return query.judges(self.store)

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, run once per report under ``key`` however many sections ask."""
        if key not in self._shared:
            self._shared[key] = compute()
        value: T = self._shared[key]
        return value

    def mean(self, values: Sequence[float], *key: object) -> Stat:
        """The mean of ``values`` with the report's bootstrap interval, drawn from a generator
        of its own seeded by ``key`` (say table, row keys and column)."""
        return bootstrap_mean(
            values,
            resamples=self.options.resamples,
            rng=generator(self.options.seed, *key),
            confidence=self.options.confidence,
        )


class ReportSection(ABC):
    """One part of ``ecap report``. Subclasses set :attr:`order` to place themselves and
    implement :meth:`tables`; an empty table is left out of Markdown and HTML."""

    #: Lower first; ecap's own sections use 10 to 40.
    order: ClassVar[int] = 100

    @abstractmethod
    def tables(self, context: ReportContext) -> list[Table]:
        """This section's tables. Raise :class:`~ecap.errors.EcapError` to refuse the whole
        report with a message (a selection that cannot be reported as asked)."""


def section_classes() -> dict[str, type[ReportSection]]:
    """Every registered section by name: ecap's own and every installed plugin's."""
    from ..plugins import get_registry
    from .filters import FiltersSection
    from .human import HumanGradesSection

    found: dict[str, type[ReportSection]] = {
        "human_grades": HumanGradesSection,
        "filters": FiltersSection,
    }
    for name, registration in get_registry().report_sections.items():
        target = registration.target
        if isinstance(target, str):
            module_name, _, class_name = target.partition(":")
            target = getattr(importlib.import_module(module_name), class_name, None)
        if not (isinstance(target, type) and issubclass(target, ReportSection)):
            raise EcapError(
                f"report section {name!r} from {registration.package} is not a "
                "ecap.report.ReportSection"
            )
        found[name] = target
    return found


def build_report(
    store: Store,
    options: ReportOptions | None = None,
    *,
    sections: dict[str, type[ReportSection]] | None = None,
) -> Report:
    """Every section's tables for ``options`` (default: every verdict). ``sections`` replaces the
    registered ones (tests, or a program that wants some only)."""
    options = options or ReportOptions()
    options.check()
    query.check_selection(
        store,
        ReportOptions.ids([*options.runs, *options.human_runs]),
        ReportOptions.ids([*options.steps, *options.human_steps]),
    )
    context = ReportContext(store, options)
    context.meta.update(
        {
            "judge": options.judge,
            "confidence": options.confidence,
            "resamples": options.resamples,
            "seed": options.seed,
            "human_policy": options.human,
            "filters": {
                "runs": list(options.runs),
                "steps": list(options.steps),
                "human_runs": list(options.human_runs),
                "human_steps": list(options.human_steps),
            },
        }
    )
    orphans = sum(1 for v in context.verdicts() if v.instruction_id is None)
    if orphans:
        context.notes.append(
            f"{orphans} verdict(s) name no instruction and were left out (they cannot be "
            "grouped by model)"
        )
    chosen = sections if sections is not None else section_classes()
    tables: list[Table] = []
    for _, cls in sorted(chosen.items(), key=lambda item: (item[1].order, item[0])):
        tables.extend(cls().tables(context))
    return Report(meta=context.meta, tables=tables, notes=context.notes)


__all__ = [
    "HumanPolicy",
    "ReportContext",
    "ReportOptions",
    "ReportSection",
    "build_report",
    "section_classes",
    "split_label",
]
