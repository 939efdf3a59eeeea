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

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import __version__
from .calls import CallLog
from .errors import EcapError
from .hashing import digest, redact, redact_text, semantic_config
from .interfaces import (
    AnnotationSource,
    Captioner,
    Exporter,
    Filter,
    Judge,
    Plugin,
    PluginContext,
    SourceRow,
    Trainer,
    has_async,
)
from .logs import event
from .progress import Progress
from .records import Dataset, Item, Record, SampleError
from .spec import Spec, Step
from .store import Store
from .store.store import Finished

#: What a step made of one input: items, a failure, or ``None`` when the work is still pending
#: outside the process (humans in Label Studio, a batch-API job); the step then waits.
Outcome = list[Item] | SampleError | None
AGGREGATE_KINDS = {"train", "export"}


@dataclass
class StepOutcome:
    step_id: str
    status: str  # complete, cached, waiting, failed, skipped
    step_run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


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


@dataclass
class _Input:
    """One unit of work for a step: what it is, and its cache key."""

    key: str
    cache_key: str
    payload: Item | SourceRow


class Runner:
    def __init__(self, spec: Spec, store: Store, options: RunOptions | None = None) -> None:
        self.spec = spec
        self.store = store
        self.options = options or RunOptions()

    def run(self) -> RunResult:
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
                        u for u in step.inputs if outcomes[u].status not in ("complete", "cached")
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
        except BaseException as exc:
            self.store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
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

    # -- one step ---------------------------------------------------------------------------

    def plugin_for(self, step: Step) -> Plugin:
        context = PluginContext(
            step_id=step.id,
            base_dir=self.spec.base_dir,
            work_dir=self.spec.base_dir,
            limit=self.options.limit,
            logger=logging.getLogger(f"ecap.step.{step.id}"),
        )
        return step.plugin.cls(step.config, context)

    def _run_step(
        self, run_id: str, step: Step, items: list[Item], progress: Progress
    ) -> tuple[StepOutcome, list[Item]]:
        plugin = self.plugin_for(step)
        step_key = step_key_of(step, plugin)
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
        plugin.context.calls = CallLog(self.store, step_run_id)
        plugin.context.records = self.store.records
        plugin.context.save_records = partial(
            self.store.save_batch, step_run_id, step_key, step.id, [], []
        )
        execution = _StepExecution(self, step, plugin, step_key, step_run_id, progress)
        try:
            if step.kind in AGGREGATE_KINDS:
                outcome, produced = execution.aggregate(items)
            else:
                outcome, produced = execution.per_sample(items)
        except Exception as exc:  # the step fails; independent steps still run
            message = f"{type(exc).__name__}: {exc}"
            self.store.finish_step(step_run_id, "failed", execution.counts, message)
            details = {} if isinstance(exc, EcapError) else {"traceback": traceback.format_exc()}
            event("step.failed", logging.ERROR, step=step.id, error=message, **details)
            return StepOutcome(step.id, "failed", step_run_id, execution.counts, message), []
        finally:
            plugin.close()
        self.store.finish_step(step_run_id, outcome.status, outcome.counts, outcome.error)
        event("step.end", step=step.id, status=outcome.status, **outcome.counts)
        return outcome, produced

    def _secret_paths(self, step: Step) -> set[tuple[str, ...]]:
        prefix = ("steps", step.id, "with")
        return {p[len(prefix) :] for p in self.spec.secret_paths if p[: len(prefix)] == prefix}


def step_key_of(step: Step, plugin: Plugin) -> str:
    """What identifies a step's work, apart from its inputs."""
    return digest(
        "step",
        step.kind,
        step.plugin.name,
        step.plugin.version,
        plugin.revision,
        semantic_config(step.config),
        plugin.fingerprint(),
    )


class _StepExecution:
    """The state of one step while it runs (or while ``ecap pipeline plan`` looks at it)."""

    def __init__(
        self,
        runner: Runner,
        step: Step,
        plugin: Plugin,
        step_key: str,
        step_run_id: str,
        progress: Progress,
    ) -> None:
        self.runner, self.step, self.plugin = runner, step, plugin
        self.store = runner.store
        self.step_key, self.step_run_id = step_key, step_run_id
        self.progress = progress
        self.counts = {"inputs": 0, "cached": 0, "done": 0, "failed": 0, "pending": 0}

    # -- per-sample kinds: source, caption, filter, judge, annotate ---------------------------

    def per_sample(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        inputs = self.inputs(items)
        self.counts["inputs"] = len(inputs)
        finished = self.store.finished([i.cache_key for i in inputs])
        self.counts["cached"] = len(finished)
        todo = [i for i in inputs if i.cache_key not in finished]
        results: dict[str, list[Item]] = {}
        if todo:
            task = self.progress.add(f"{self.step.kind} {self.step.id}", len(todo))
            if self.step.kind == "annotate":
                results = self._annotate(todo, task)
            else:
                results = self._process(todo, task)
        produced = self.outputs(inputs, finished, results)
        if isinstance(self.plugin, Filter):
            self.counts["kept"] = len(produced)
        return self._outcome(), produced

    def outputs(
        self,
        inputs: list[_Input],
        finished: dict[str, list[dict[str, str]]],
        fresh: dict[str, list[Item]],
    ) -> list[Item]:
        """The step's output items in input order: cached ones read back, fresh ones as made;
        for a filter, only those its (current) thresholds keep."""
        cached = iter(self.store.hydrate([ref for refs in finished.values() for ref in refs]))
        by_key = {key: [next(cached) for _ in refs] for key, refs in finished.items()}
        by_key.update(fresh)
        produced = [item for i in inputs for item in by_key.get(i.cache_key, [])]
        if isinstance(self.plugin, Filter):
            keep = self.plugin.keep
            produced = [item for item in produced if item.score is None or keep(item.score)]
        return produced

    def inputs(self, items: list[Item]) -> list[_Input]:
        """One input per distinct key: the same row or item reaching a step twice is one sample."""
        payloads: list[tuple[str, Item | SourceRow]]
        if self.step.kind == "source":
            assert isinstance(self.plugin, AnnotationSource)
            payloads = [(row.key, row) for row in self.plugin.rows()]
        else:
            payloads = [(item.key(), item) for item in items]
        limit = self.runner.options.limit if self.step.kind == "source" else None
        unique: dict[str, Item | SourceRow] = {}
        for key, payload in payloads:
            if limit is not None and len(unique) >= limit:
                break
            unique.setdefault(key, payload)
        return [_Input(key, digest(self.step_key, key), p) for key, p in unique.items()]

    def _outcome(self) -> StepOutcome:
        c = self.counts
        attempted = c["done"] + c["failed"]
        rate = self.runner.options.max_error_rate
        limit = self.step.options.max_error_rate if rate is None else rate
        if attempted and c["failed"] / attempted > limit:
            return StepOutcome(
                self.step.id,
                "failed",
                self.step_run_id,
                c,
                f"{c['failed']} of {attempted} samples failed "
                f"(more than max_error_rate={limit}); see `ecap runs show`",
            )
        if c["pending"]:
            return StepOutcome(
                self.step.id,
                "waiting",
                self.step_run_id,
                c,
                f"{c['pending']} samples are with annotators",
            )
        status = "cached" if c["inputs"] and c["cached"] == c["inputs"] else "complete"
        return StepOutcome(self.step.id, status, self.step_run_id, c)

    def _process(self, todo: list[_Input], task: Any) -> dict[str, list[Item]]:
        size = self.step.options.batch_size
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        results: dict[str, list[Item]] = {}
        async_method = {"caption": "acaption", "filter": "ascore", "judge": "ajudge"}.get(
            self.step.kind
        )
        if async_method and has_async(self.plugin, async_method):
            asyncio.run(self._process_async(batches, results, task))
        else:
            for batch in batches:
                outcomes = self._with_retries(partial(self._call_sync, batch), len(batch))
                self._commit(batch, outcomes, results)
                self.progress.advance(task, len(batch))
        return results

    async def _process_async(
        self, batches: list[list[_Input]], results: dict[str, list[Item]], task: Any
    ) -> None:
        limiter = asyncio.Semaphore(self.step.options.concurrency)

        async def one(batch: list[_Input]) -> None:
            async with limiter:
                outcomes = await self._with_retries_async(
                    lambda: self._call_async(batch), len(batch)
                )
            self._commit(batch, outcomes, results)
            self.progress.advance(task, len(batch))

        await asyncio.gather(*(one(b) for b in batches))

    def _call_sync(self, batch: list[_Input]) -> list[Outcome]:
        payloads: Any = [i.payload for i in batch]
        plugin = self.plugin
        raw: Sequence[Any]
        if isinstance(plugin, AnnotationSource):
            raw = plugin.load(payloads)
        elif isinstance(plugin, Captioner):
            raw = plugin.caption(payloads)
        elif isinstance(plugin, Filter):
            raw = plugin.score(payloads)
        elif isinstance(plugin, Judge):
            raw = plugin.judge(payloads)
        else:
            raise EcapError(f"step '{self.step.id}': {type(plugin).__name__} is not per-sample")
        return self._attach(batch, raw)

    async def _call_async(self, batch: list[_Input]) -> list[Outcome]:
        payloads: Any = [i.payload for i in batch]
        plugin = self.plugin
        raw: Sequence[Any]
        if isinstance(plugin, Captioner):
            raw = await plugin.acaption(payloads)
        elif isinstance(plugin, Filter):
            raw = await plugin.ascore(payloads)
        else:
            assert isinstance(plugin, Judge)
            raw = await plugin.ajudge(payloads)
        return self._attach(batch, raw)

    def _attach(self, batch: list[_Input], raw: Sequence[Any]) -> list[Outcome]:
        """Turn each plugin result into the items the step emits for that input."""
        if not isinstance(raw, list | tuple) or len(raw) != len(batch):
            raise EcapError(
                f"plugin '{self.step.plugin.name}' returned "
                f"{len(raw) if isinstance(raw, list | tuple) else type(raw).__name__} "
                f"results for a batch of {len(batch)}"
            )
        outcomes: list[Outcome] = []
        for inp, result in zip(batch, raw, strict=True):
            if result is None or isinstance(result, SampleError) or self.step.kind == "source":
                outcomes.append(result)
                continue
            item = inp.payload
            assert isinstance(item, Item)
            if self.step.kind == "caption":
                outcomes.append(
                    [
                        item.model_copy(
                            update={
                                "instruction": ins,
                                "score": None,
                                "verdict": None,
                                "preference": None,
                            }
                        )
                        for ins in result
                    ]
                )
            elif self.step.kind == "filter":
                outcomes.append([item.model_copy(update={"score": result})])
            else:
                outcomes.append([item.model_copy(update={"verdict": result})])
        return outcomes

    def _with_retries(self, call: Callable[[], list[Outcome]], size: int) -> list[Outcome]:
        attempts = self.step.options.retries + 1
        for attempt in range(attempts):
            try:
                return call()
            except EcapError:
                raise
            except Exception as exc:
                if attempt + 1 == attempts:
                    return self._batch_failed(exc, attempts, size)
                self._log_retry(exc, attempt)
                time.sleep(self.runner.options.retry_delay * 2**attempt)
        raise AssertionError("unreachable")

    async def _with_retries_async(
        self, call: Callable[[], Awaitable[list[Outcome]]], size: int
    ) -> list[Outcome]:
        attempts = self.step.options.retries + 1
        for attempt in range(attempts):
            try:
                return await call()
            except EcapError:
                raise
            except Exception as exc:
                if attempt + 1 == attempts:
                    return self._batch_failed(exc, attempts, size)
                self._log_retry(exc, attempt)
                await asyncio.sleep(self.runner.options.retry_delay * 2**attempt)
        raise AssertionError("unreachable")

    def _log_retry(self, exc: Exception, attempt: int) -> None:
        event(
            "batch.retry",
            logging.WARNING,
            step=self.step.id,
            attempt=attempt + 1,
            error=f"{type(exc).__name__}: {exc}",
        )

    def _batch_failed(self, exc: Exception, attempts: int, size: int) -> list[Outcome]:
        error = SampleError(
            error_type=type(exc).__name__, message=f"{exc} (batch failed {attempts} times)"
        )
        return [error] * size

    def _commit(
        self, batch: Sequence[_Input], outcomes: list[Outcome], results: dict[str, list[Item]]
    ) -> None:
        finished: list[Finished] = []
        failed: list[tuple[str, SampleError]] = []
        new_records: dict[str, Record] = {}
        pending = 0
        for inp, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                pending += 1
                continue
            if isinstance(outcome, SampleError):
                failed.append((inp.key, outcome))
                continue
            known = (
                {r.id for r in inp.payload.records()} if isinstance(inp.payload, Item) else set()
            )
            for item in outcome:
                new_records.update((r.id, r) for r in item.records() if r.id not in known)
            finished.append(Finished(inp.cache_key, inp.key, [i.refs() for i in outcome]))
            results[inp.cache_key] = outcome
        self.store.save_batch(
            self.step_run_id, self.step_key, self.step.id, finished, failed, new_records.values()
        )
        self.counts["done"] += len(finished)
        self.counts["failed"] += len(failed)
        self.counts["pending"] += pending

    # -- annotate: push to humans, pull what they finished ----------------------------------

    def _annotate(self, todo: list[_Input], task: Any) -> dict[str, list[Item]]:
        plugin = self.plugin
        assert isinstance(plugin, AnnotationSource)
        tasks = self.store.external_tasks([i.cache_key for i in todo])
        unpushed = [i for i in todo if i.cache_key not in tasks]
        size = self.step.options.batch_size
        for start in range(0, len(unpushed), size):
            batch = unpushed[start : start + size]
            ids = plugin.push([i.payload for i in batch])  # type: ignore[misc]
            self.store.save_external_tasks(
                self.step_run_id,
                self.step_key,
                [(i.cache_key, i.key, ext) for i, ext in zip(batch, ids, strict=True)],
            )
            tasks.update({i.cache_key: ext for i, ext in zip(batch, ids, strict=True)})
        results: dict[str, list[Item]] = {}
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            pulled = plugin.pull([(i.payload, tasks[i.cache_key]) for i in batch])  # type: ignore[misc]
            self._commit(batch, pulled, results)
            self.progress.advance(task, sum(r is not None for r in pulled))
        return results

    # -- aggregate kinds: export, train -----------------------------------------------------

    def aggregate_key(self, items: list[Item]) -> tuple[list[Item], str, str]:
        """(distinct items, their content hash, the step's single cache key)."""
        unique = list({item.key(): item for item in items}.values())
        content_hash = digest("dataset", [item.key() for item in unique])
        return unique, content_hash, digest(self.step_key, content_hash)

    def aggregate(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        unique, content_hash, cache_key = self.aggregate_key(items)
        self.counts["inputs"] = len(unique)
        if self.store.finished([cache_key]):
            self.counts["cached"] = len(unique)
            return StepOutcome(self.step.id, "cached", self.step_run_id, self.counts), unique
        task = self.progress.add(f"{self.step.kind} {self.step.id}", 1)
        dataset = Dataset(
            name=self.step.id, content_hash=content_hash, format="items", count=len(unique)
        )
        records: list[Record] = []
        if isinstance(self.plugin, Exporter):
            result = self.plugin.export(unique, content_hash)
            dataset = dataset.model_copy(update={"uri": result.uri, "format": result.format})
            records.append(dataset)
        else:
            assert isinstance(self.plugin, Trainer)
            model = self.plugin.train(unique, dataset)
            records += [dataset, model]
        edges = [
            {
                "src_type": "dataset",
                "src_id": dataset.id,
                "verb": "used",
                "dst_type": item.leaf().record_type,
                "dst_id": item.leaf().id,
                "step_run_id": self.step_run_id,
            }
            for item in unique
        ]
        if len(records) == 2:
            edges.append(
                {
                    "src_type": "model",
                    "src_id": records[1].id,
                    "verb": "used",
                    "dst_type": "dataset",
                    "dst_id": dataset.id,
                    "step_run_id": self.step_run_id,
                }
            )
        self.store.save_batch(
            self.step_run_id,
            self.step_key,
            self.step.id,
            [Finished(cache_key, content_hash, [{r.record_type: r.id for r in records}])],
            [],
            records,
            edges,
        )
        self.counts["done"] = len(unique)
        self.progress.advance(task, 1)
        return StepOutcome(self.step.id, "complete", self.step_run_id, self.counts), unique


__all__ = ["RunOptions", "RunResult", "Runner", "StepOutcome"]
