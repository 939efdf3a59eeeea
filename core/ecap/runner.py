"""Executes a spec against a store: in dependency order, sample by sample, resumably.

For each step the runner computes a *step key* (plugin, package version, plugin revision, semantic
config, fingerprint) and, for each input, a *cache key* = hash(step key, input record ids). Inputs
whose cache key is already in ``sample_results`` are served from the store; the rest are processed
in batches, and each batch is committed in one transaction with the records it produced. So a run
killed at any point, re-run, repeats no committed sample and loses none; changing one step's config
changes its step key, which changes its outputs' ids, which changes its dependants' cache keys, and
nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__
from .calls import CallLog
from .errors import EcapError, RunInterrupted
from .execution import StepExecution, StepOutcome
from .executors import ExecutorConfig
from .hashing import digest, redact, redact_text, semantic_config
from .interfaces import Plugin, PluginContext
from .logs import event
from .models import ModelRef, ResolvedModel, resolve_model
from .progress import Progress
from .records import Item, Model
from .secrets import register_config, register_environment, scrub
from .spec import Spec, Step
from .store import Store


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into :class:`RunInterrupted` while a run is in progress, so the
    run and its running step are recorded as ``interrupted`` rather than left ``running``."""

    def stop(signum: int, _frame: object) -> None:
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class RunResult:
    run_id: str
    status: str  # complete, waiting, failed
    steps: dict[str, StepOutcome]


@dataclass
class RunOptions:
    limit: int | None = None
    max_error_rate: float | None = None  # overrides every step's own setting
    progress: bool = True
    retry_delay: float = 0.5  # first backoff; doubles per retry
    #: Where model steps compute (``--executor``); ``None`` takes the spec's ``executor:``.
    executor: ExecutorConfig | None = None
    #: One of several workers on one store (``--worker``): run the per-sample steps, and wait for
    #: the human and whole-input steps, which another (non-worker) run does. See docs/scale.md.
    worker: bool = False
    #: How long a claim outlives a holder that stops renewing it (``--lease``).
    lease_seconds: float = 120.0


class Runner:
    def __init__(self, spec: Spec, store: Store, options: RunOptions | None = None) -> None:
        self.spec = spec
        self.store = store
        self.options = options or RunOptions()
        if self.options.executor is None:
            self.options = replace(self.options, executor=spec.executor)
        #: train step id -> the model it produced (this run, or served from the store).
        self.models: dict[str, Model] = {}

    def run(self) -> RunResult:
        self.register_secrets()
        plugins = {
            f"{s.kind}:{s.plugin.name}": f"{s.plugin.package} {s.plugin.version}"
            for s in self.spec.steps.values()
        }
        run_id = self.store.start_run(
            name=self.spec.name,
            spec_path=str(self.spec.path),
            spec_text=redact_text(self.spec.text),
            spec_hash=self.spec.text_hash,
            ecap_version=__version__,
            plugins=plugins,
        )
        event("run.start", run=run_id, spec=str(self.spec.path))
        outcomes: dict[str, StepOutcome] = {}
        outputs: dict[str, list[Item]] = {}
        try:
            with Progress(enabled=self.options.progress) as progress:
                for step_id in self.spec.order():
                    step = self.spec.steps[step_id]
                    blocked = [
                        u for u in step.needs if outcomes[u].status not in ("complete", "cached")
                    ]
                    if blocked:
                        outcomes[step_id] = StepOutcome(
                            step_id,
                            "skipped",
                            error=f"waiting for upstream step(s): {', '.join(blocked)}",
                        )
                        continue
                    items = [item for u in step.inputs for item in outputs[u]]
                    outcome, produced = self._run_step(run_id, step, items, progress)
                    outcomes[step_id], outputs[step_id] = outcome, produced
        except KeyboardInterrupt as exc:
            self.store.finish_run(run_id, "interrupted", error=_interruption(exc))
            event("run.interrupted", logging.WARNING, run=run_id, signal=_interruption(exc))
            raise
        except BaseException as exc:
            self.store.finish_run(run_id, "failed", error=scrub(f"{type(exc).__name__}: {exc}"))
            raise
        statuses = {o.status for o in outcomes.values()}
        status = (
            "failed"
            if "failed" in statuses
            else "waiting"
            if statuses & {"waiting", "skipped"}
            else "complete"
        )
        self.store.finish_run(run_id, status)
        event("run.end", run=run_id, status=status)
        return RunResult(run_id, status, outcomes)

    def register_secrets(self) -> None:
        """Every secret value the run knows (keys in the spec, its steps' configs, the
        environment), so that none is stored or printed, even when a server echoes it back."""
        register_environment()
        for step in self.spec.steps.values():
            register_config(step.raw_config)
            register_config(step.config)

    # -- one step ---------------------------------------------------------------------------

    def plugin_for(self, step: Step) -> Plugin:
        context = PluginContext(
            step_id=step.id,
            base_dir=self.spec.base_dir,
            work_dir=self.work_root() / _safe(step.id),
            limit=self.options.limit,
            logger=logging.getLogger(f"ecap.step.{step.id}"),
            resolve_model=self.resolve_model,
        )
        return step.plugin.cls(step.config, context)

    def work_root(self) -> Path:
        """Where steps keep their files (checkpoints, job files): ``$ECAP_WORK_DIR``, else
        ``.ecap/work`` in the spec's folder. Never the spec's folder itself."""
        configured = os.environ.get("ECAP_WORK_DIR")
        return Path(configured) if configured else self.spec.base_dir / ".ecap" / "work"

    def resolve_model(self, ref: ModelRef) -> ResolvedModel:
        return resolve_model(ref, self.spec.base_dir, trained=self.trained_model)

    def trained_model(self, step_id: str) -> Model:
        try:
            return self.models[step_id]
        except KeyError:
            raise EcapError(
                f"step '{step_id}' has not produced a model yet (it must complete first)"
            ) from None

    def step_models(self, step: Step) -> dict[str, Model]:
        """The stored models a step's config names, by field path (``model``, ``ref_model``)."""
        return {".".join(path): self.trained_model(src) for path, src in step.models.items()}

    def step_key(self, step: Step, plugin: Plugin) -> str:
        """What identifies a step's work, apart from its inputs."""
        models = {path: model.id for path, model in self.step_models(step).items()}
        return step_key_of(step, plugin, models)

    def _run_step(
        self, run_id: str, step: Step, items: list[Item], progress: Progress
    ) -> tuple[StepOutcome, list[Item]]:
        plugin = self.plugin_for(step)
        step_key = self.step_key(step, plugin)
        step_run_id = self.store.start_step(
            run_id=run_id,
            step_id=step.id,
            kind=step.kind,
            plugin=step.plugin.name,
            plugin_version=step.plugin.version,
            package=step.plugin.package,
            config=redact(step.raw_config, self._secret_paths(step)),
            step_key=step_key,
        )
        event("step.start", step=step.id, plugin=step.plugin.name, step_run=step_run_id)
        context = plugin.context
        context.calls = CallLog(self.store, step_run_id)
        context.records = self.store.records
        context.save_records = partial(
            self.store.save_batch, step_run_id, step_key, step.id, [], []
        )
        context.log_metrics = partial(self.store.save_metrics, step_run_id)
        execution = self.execution(step, plugin, step_key, step_run_id, progress, run_id)
        try:
            if plugin.contract.shape == "whole_input":
                # One folder per cache key: a killed training finds its checkpoints again, and a
                # changed config (a new key) never resumes from another config's checkpoints.
                _, _, cache_key = execution.whole_input_key(items)
                context.work_dir = context.work_dir / cache_key.split(":")[-1][:16]
            outcome, produced = execution.run(items)
        except KeyboardInterrupt as exc:  # stopped from outside: what was committed stays
            self.store.finish_step(step_run_id, "interrupted", execution.counts, _interruption(exc))
            raise
        except Exception as exc:  # the step fails; independent steps still run
            message = scrub(f"{type(exc).__name__}: {exc}")
            self.store.finish_step(step_run_id, "failed", execution.counts, message)
            details = {} if isinstance(exc, EcapError) else {"traceback": traceback.format_exc()}
            event("step.failed", logging.ERROR, step=step.id, error=message, **details)
            return StepOutcome(step.id, "failed", step_run_id, execution.counts, message), []
        finally:
            plugin.close()
        self.remember_models(step, execution)
        self.store.finish_step(step_run_id, outcome.status, outcome.counts or {}, outcome.error)
        event("step.end", step=step.id, status=outcome.status, **(outcome.counts or {}))
        return outcome, produced

    def execution(
        self,
        step: Step,
        plugin: Plugin,
        step_key: str,
        step_run_id: str,
        progress: Progress,
        run_id: str | None = None,
    ) -> StepExecution:
        return StepExecution(
            step,
            plugin,
            self.store,
            self.options,
            step_key,
            step_run_id,
            progress,
            models=list(self.step_models(step).values()),
            run_id=run_id,
        )

    def remember_models(self, step: Step, execution: StepExecution) -> None:
        """Keep the model a train step made, so later steps naming ``{step: ...}`` can use it."""
        for record in execution.produced:
            if isinstance(record, Model):
                self.models[step.id] = record

    def _secret_paths(self, step: Step) -> set[tuple[str, ...]]:
        prefix = ("steps", step.id, "with")
        return {p[len(prefix) :] for p in self.spec.secret_paths if p[: len(prefix)] == prefix}


def step_key_of(step: Step, plugin: Plugin, models: dict[str, str] | None = None) -> str:
    """What identifies a step's work, apart from its inputs: the plugin, its version and
    revision, the semantic config, the plugin's fingerprint, and the stored models it names."""
    parts: list[Any] = [
        "step",
        step.kind,
        step.plugin.name,
        step.plugin.version,
        plugin.revision,
        semantic_config(step.config),
        plugin.fingerprint(),
    ]
    if models:
        parts.append(models)  # only when present, so keys of steps without models never change
    return digest(*parts)


def _interruption(exc: KeyboardInterrupt) -> str:
    return f"interrupted by {exc}" if isinstance(exc, RunInterrupted) else "interrupted by SIGINT"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


__all__ = [
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "Runner",
    "StepOutcome",
    "interrupted_by_signals",
    "step_key_of",
]
