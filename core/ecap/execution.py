"""One step's work: which inputs it has, which are already done, and doing the rest.

The shape of the work comes from the step's kind (:class:`ecap.interfaces.KindContract`):

- ``per_sample``: inputs in batches through the kind's method (or its coroutine variant, several
  batches in flight), each batch committed with the records it produced;
- ``human``: inputs pushed to people once (task ids stored first), then pulled every run until
  they are finished;
- ``whole_input``: all inputs at once, frozen into a content-hashed dataset, one result.

Both the runner and ``ecap pipeline plan`` use this class, so a plan cannot disagree with a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from .claims import ClaimedWork
from .datasets import held_out_among, held_out_pairs, refuse_held_out
from .errors import EcapError
from .executors import BatchCalls, make_executor
from .hashing import digest
from .interfaces import Plugin, SourceRow, has_async
from .logs import event
from .progress import Progress, metrics_line
from .records import Dataset, Item, Model, Record, SampleError
from .secrets import scrub
from .spec import Step
from .store import Store
from .store.store import CompletedSample

if TYPE_CHECKING:
    from .runner import RunOptions

#: How often a worker looks whether another run has finished a step it waits for.
WORKER_POLL_SECONDS = 2.0

#: A batch whose plugin call took less than this is "quick": the runner's own cost per batch (a
#: claim, a commit) is then a large share of the step, so the next batch is made twice as large.
QUICK_BATCH_SECONDS = 0.05
#: The largest batch grown that way: large enough that a commit per batch costs little, small
#: enough that a killed run loses little work and other workers still get a share.
GROWN_BATCH_LIMIT = 1024
#: Allocations between two young passes of the garbage collector while a step runs.
GC_YOUNG_THRESHOLD = 50_000

#: What a step made of one input: items, a failure, or ``None`` when the work is still pending
#: outside the process (humans in Label Studio, a batch-API job); the step then waits.
SampleOutcome = list[Item] | SampleError | None


@dataclass
class StepOutcome:
    step_id: str
    status: str  # complete, cached, waiting, failed, skipped
    step_run_id: str | None = None
    counts: dict[str, int] | None = None
    error: str | None = None


class StepCollector:
    """The cyclic garbage collector while a per-sample step runs, set for what such a step
    allocates: many small records that all live until the step ends.

    The step keeps every item it makes (its outputs feed the next step) and every item earlier
    steps made, so the collector's passes walked ever more live objects and found nothing to
    free: even with young passes made rare, 1-1.5 s of the 19 s that 100,000 samples of a step
    doing no model work took, after a source step served from the store. So, while it runs:

    - what is alive when it starts is frozen (:func:`gc.freeze`), after a young pass: no pass
      walks it again until the step ends (a full pass there would walk every item of the steps
      before, and garbage that old is rare: a model plugin collects its own when it closes);
    - after each batch is committed, a full pass collects whatever garbage the batch left (it
      walks only what was allocated since the last freeze), then what survived is frozen too;
    - between those, young passes run every :data:`GC_YOUNG_THRESHOLD` allocations instead of
      every 700 (a plugin's garbage within a long batch is still collected as it goes);
    - no passes at all while the store reads records back (:meth:`reading`).

    Nothing that is garbage at the end of a batch is frozen, so a model step's cyclic garbage
    (which may hold accelerator memory) waits at most until its batch ends. At the end of the
    step every frozen object goes back to the collector's oldest generation. A process that
    froze objects itself (a server preforking workers) is left as it is: only the young
    threshold changes. Training steps do not use this: they keep the interpreter's setting.
    """

    _threshold: tuple[int, int, int]  # the interpreter's, while a step runs
    _freezes = False  # whether this step freezes (the process froze nothing itself)

    def __enter__(self) -> StepCollector:
        self._threshold = gc.get_threshold()
        gc.set_threshold(max(self._threshold[0], GC_YOUNG_THRESHOLD), *self._threshold[1:])
        self._freezes = gc.isenabled() and gc.get_freeze_count() == 0
        if self._freezes:
            gc.collect(1)
            gc.freeze()
        return self

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """No passes while the store reads back what earlier runs made (a step's cached items,
        its finished samples' refs): records and refs hold no cycles, so no pass could free any
        of it, and it lives until the step ends. It is frozen as read, without a pass (a pass
        over 100,000 hydrated pairs costs about as much as the passes it saves). Nothing else
        of the step runs meanwhile (no batch is in flight before or after the step's batches)."""
        paused = self._freezes and gc.isenabled()
        if paused:
            gc.disable()
        try:
            yield
        finally:
            if paused:
                gc.enable()
                gc.freeze()

    def settle(self) -> None:
        """Collect what the last batch left behind, and set aside what it keeps."""
        if self._freezes:
            gc.collect()
            gc.freeze()

    def __exit__(self, *exc_info: object) -> None:
        if self._freezes:
            gc.unfreeze()
        gc.set_threshold(*self._threshold)


class BatchSizes:
    """How many samples the next batch of a per-sample step takes.

    A ``batch_size`` the spec sets is kept as it is. Left unset, it starts at the default (sized
    for model work) and doubles, up to :data:`GROWN_BATCH_LIMIT`, after each batch whose plugin
    call was quicker than :data:`QUICK_BATCH_SECONDS`: a step that does no model work (a source
    reading small files, a heuristic) then commits in a few large transactions instead of
    thousands of small ones, while a model step, whose batches take longer, keeps its batch size
    and the memory it was sized for. Only plain (not coroutine) plugins run one batch at a time
    grow: a coroutine plugin's ``concurrency`` counts batches in flight, which larger batches
    would change, and so do an executor's replicas.
    """

    def __init__(self, step: Step, plugin: Plugin, calls: BatchCalls) -> None:
        self.size = step.options.batch_size
        method = plugin.contract.async_method
        coroutine = method is not None and has_async(plugin, method)
        unset = "batch_size" not in step.options.model_fields_set
        self.grows = unset and calls.window == 1 and not coroutine

    def __call__(self) -> int:
        return self.size

    def took(self, samples: int, seconds: float) -> None:
        """A batch of ``samples`` samples took ``seconds`` in the plugin."""
        if self.grows and samples >= self.size and seconds < QUICK_BATCH_SECONDS:
            self.size = min(2 * self.size, GROWN_BATCH_LIMIT)


@dataclass(frozen=True)
class WorkUnit:
    """One input of a step: its identity (``key``), its cache key, and the row or item itself."""

    key: str
    cache_key: str
    payload: Item | SourceRow


class StepExecution:
    """The state of one step while it runs (or while ``ecap pipeline plan`` looks at it)."""

    def __init__(
        self,
        step: Step,
        plugin: Plugin,
        store: Store,
        options: RunOptions,
        step_key: str,
        step_run_id: str,
        progress: Progress,
        models: Sequence[Model] = (),
        run_id: str | None = None,
    ) -> None:
        self.step, self.plugin, self.store, self.options = step, plugin, store, options
        self.run_id = run_id
        self.contract = plugin.contract
        self.step_key, self.step_run_id = step_key, step_run_id
        self.progress = progress
        self.models = list(models)  # models this step runs: what its records are attributed to
        self.counts = {"inputs": 0, "cached": 0, "done": 0, "failed": 0, "pending": 0}
        #: What a whole-input step made (dataset, and model for a train step), fresh or cached.
        self.produced: list[Record] = []
        self.collector = StepCollector()

    def run(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        if self.options.worker and self.contract.shape != "per_sample":
            return self.finished_by_another_run(items)
        if self.contract.shape == "whole_input":
            return self.whole_input(items)
        with self.collector:
            return self.per_sample(items)

    def finished_by_another_run(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        """A worker's way through a step it does not run (people's work, a training, an
        export): wait until another run has stored all of it, then serve it as cached. One
        trainer, one exporter and one set of annotation tasks, however many workers there are."""
        whole = self.contract.shape == "whole_input"
        inputs: list[WorkUnit] = []
        if whole:
            unique, _, cache_key = self.whole_input_key(items)
            keys = [cache_key]
        else:
            inputs = self.inputs(items)
            keys = [i.cache_key for i in inputs]
        waited = False
        while len(finished := self.store.finished(keys)) < len(keys):
            if not waited:
                event(
                    "step.waiting",
                    logging.WARNING,
                    step=self.step.id,
                    samples=len(keys) - len(finished),
                    why=f"a worker does not run {self.contract.key} steps; waiting for a run "
                    "without --worker to finish them",
                )
                waited = True
            time.sleep(WORKER_POLL_SECONDS)
        if whole:
            self.produced = self.produced_before(cache_key) or []
            self.counts.update(inputs=len(unique), cached=len(unique))
            return StepOutcome(self.step.id, "cached", self.step_run_id, self.counts), unique
        self.counts.update(inputs=len(inputs), cached=len(inputs))
        return self._outcome(), self.outputs(inputs, finished, {})

    # -- per-sample and human kinds -----------------------------------------------------------

    def per_sample(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        inputs = self.inputs(items)
        self.counts["inputs"] = len(inputs)
        with self.collector.reading():
            finished = self.store.finished([i.cache_key for i in inputs])
        self.counts["cached"] = len(finished)
        todo = [i for i in inputs if i.cache_key not in finished]
        results: dict[str, list[Item]] = {}
        if todo:
            task = self.progress.add(f"{self.contract.key} {self.step.id}", len(todo))
            if self.contract.shape == "human":
                results = self._annotate(todo, task)
            else:
                elsewhere = asyncio.run(self._process(todo, results, task))
                finished.update(self.store.finished(elsewhere))
                self.counts["cached"] += len(elsewhere)
        produced = self.outputs(inputs, finished, results)
        return self._outcome(), produced

    def outputs(
        self,
        inputs: list[WorkUnit],
        finished: dict[str, list[dict[str, str]]],
        fresh: dict[str, list[Item]],
    ) -> list[Item]:
        """The step's output items in input order, cached ones read back, fresh ones as made,
        after whatever decision the plugin takes over all of them (a filter's thresholds)."""
        with self.collector.reading():
            cached = iter(self.store.hydrate([ref for refs in finished.values() for ref in refs]))
        by_key = {key: [next(cached) for _ in refs] for key, refs in finished.items()}
        by_key.update(fresh)
        produced = [item for i in inputs for item in by_key.get(i.cache_key, [])]
        selected, counts = self.plugin.select(produced)
        self.counts.update(counts)
        return selected

    def inputs(self, items: list[Item]) -> list[WorkUnit]:
        """One input per distinct key: the same row or item reaching a step twice is one sample."""
        payloads: list[tuple[str, Item | SourceRow]]
        limit = None
        if not self.contract.takes_input:
            rows = self.plugin.rows()  # type: ignore[attr-defined]
            payloads = [(row.key, row) for row in rows]
            limit = self.options.limit
        else:
            payloads = [(item.key(), item) for item in items]
        unique: dict[str, Item | SourceRow] = {}
        for key, payload in payloads:
            if limit is not None and len(unique) >= limit:
                break
            unique.setdefault(key, payload)
        return [WorkUnit(key, digest(self.step_key, key), p) for key, p in unique.items()]

    def _outcome(self) -> StepOutcome:
        c = self.counts
        # Samples served from the store succeeded in an earlier run: a re-run that retries only
        # the one sample that failed before must not judge the step by that sample alone.
        attempted = c["done"] + c["failed"] + c["cached"]
        rate = self.options.max_error_rate
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
            return StepOutcome(self.step.id, "waiting", self.step_run_id, c)
        status = "cached" if c["inputs"] and c["cached"] == c["inputs"] else "complete"
        return StepOutcome(self.step.id, status, self.step_run_id, c)

    async def _process(
        self, todo: list[WorkUnit], results: dict[str, list[Item]], task: Any
    ) -> list[str]:
        """Every batch through the plugin, computed where the run's executor puts it
        (:mod:`ecap.executors`: in this process, coroutine plugins several at a time and others
        one at a time in a worker thread; or on Ray replicas), and committed here.

        Each batch is claimed in the store before it is computed
        (:class:`ecap.claims.ClaimedWork`), and the next one only when a worker is free for it,
        so that other runs on the same store take the rest instead of computing it twice.
        Returns the cache keys that other runs finished meanwhile: the caller serves them."""
        with make_executor(self.options.executor).open(self.step, self.plugin) as calls:
            return await self._claim_and_commit(todo, results, task, calls)

    async def _claim_and_commit(
        self, todo: list[WorkUnit], results: dict[str, list[Item]], task: Any, calls: BatchCalls
    ) -> list[str]:
        units = {unit.cache_key: unit for unit in todo}
        free = asyncio.Semaphore(calls.window)
        sizes = BatchSizes(self.step, self.plugin, calls)

        async def one(batch: list[WorkUnit], work: ClaimedWork) -> None:
            saved: list[str] = []
            try:
                call = partial(calls.call, [i.payload for i in batch])
                started = time.perf_counter()
                outcomes = await self._with_retries(call, batch)
                sizes.took(len(batch), time.perf_counter() - started)
                saved = self._commit(batch, outcomes, results)
                self.collector.settle()
                self.progress.advance(task, len(batch))
            finally:
                work.done([unit.cache_key for unit in batch], saved=set(saved))
                free.release()

        running: list[asyncio.Task[None]] = []
        lease = self.options.lease_seconds
        claims = ClaimedWork(self.store, self.step_key, run_id=self.run_id, lease_seconds=lease)
        with claims as work:
            claimed = work.abatches(list(units), sizes).__aiter__()
            try:
                while True:
                    await free.acquire()
                    if any(t.done() and t.exception() for t in running):
                        free.release()
                        break  # a setup error fails the step: claim nothing more
                    try:
                        keys = await claimed.__anext__()
                    except StopAsyncIteration:
                        free.release()
                        break
                    running.append(asyncio.create_task(one([units[k] for k in keys], work)))
            finally:
                await asyncio.gather(*running)
        return work.finished_elsewhere

    async def _with_retries(
        self, call: Callable[[], Awaitable[Sequence[Any]]], batch: list[WorkUnit]
    ) -> list[SampleOutcome]:
        """The plugin's results for ``batch``; a call that raises (other than a setup error) is
        retried with exponential backoff, then every sample of the batch fails with its reason."""
        attempts = self.step.options.retries + 1
        for attempt in range(attempts):
            try:
                return self._attach(batch, await call())
            except EcapError:
                raise
            except Exception as exc:
                if attempt + 1 == attempts:
                    error = SampleError(
                        error_type=type(exc).__name__,
                        message=f"{exc} (batch failed {attempts} times)",
                    )
                    return [error] * len(batch)
                event(
                    "batch.retry",
                    logging.WARNING,
                    step=self.step.id,
                    attempt=attempt + 1,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(self.options.retry_delay * 2**attempt)
        raise AssertionError("unreachable")

    def _attach(self, batch: list[WorkUnit], raw: Sequence[Any]) -> list[SampleOutcome]:
        """Turn each plugin result into the items the step emits for that input."""
        if not isinstance(raw, list | tuple) or len(raw) != len(batch):
            raise EcapError(
                f"plugin '{self.step.plugin.name}' returned "
                f"{len(raw) if isinstance(raw, list | tuple) else type(raw).__name__} "
                f"results for a batch of {len(batch)}"
            )
        outcomes: list[SampleOutcome] = []
        for unit, result in zip(batch, raw, strict=True):
            if result is None or isinstance(result, SampleError):
                outcomes.append(result)
            else:
                item = unit.payload if isinstance(unit.payload, Item) else None
                outcomes.append(self.plugin.attach(item, result))  # type: ignore[arg-type]
        return outcomes

    def _commit(
        self,
        batch: Sequence[WorkUnit],
        outcomes: Sequence[SampleOutcome],
        results: dict[str, list[Item]],
    ) -> list[str]:
        """Save one batch's outcomes in one transaction; returns the cache keys it finished."""
        completed: list[CompletedSample] = []
        failed: list[tuple[str, SampleError]] = []
        new_records: dict[str, Record] = {}
        pending = 0
        for unit, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                pending += 1
                continue
            if isinstance(outcome, SampleError):  # a server may echo a key back in its message
                failed.append(
                    (unit.key, outcome.model_copy(update={"message": scrub(outcome.message)}))
                )
                continue
            known = (
                {r.id for r in unit.payload.records()} if isinstance(unit.payload, Item) else set()
            )
            for item in outcome:
                new_records.update((r.id, r) for r in item.records() if r.id not in known)
            completed.append(CompletedSample(unit.cache_key, unit.key, [i.refs() for i in outcome]))
            results[unit.cache_key] = outcome
        self.store.save_batch(
            self.step_run_id,
            self.step_key,
            self.step.id,
            completed,
            failed,
            new_records.values(),
            self._attributions(new_records.values()),
        )
        self.counts["done"] += len(completed)
        self.counts["failed"] += len(failed)
        self.counts["pending"] += pending
        return [sample.cache_key for sample in completed]

    def _attributions(self, records: Any) -> list[dict[str, Any]]:
        """Edges from every record this step wrote to each model that wrote it."""
        return [
            {
                "src_type": record.record_type,
                "src_id": record.id,
                "verb": "wasAttributedTo",
                "dst_type": "model",
                "dst_id": model.id,
                "step_run_id": self.step_run_id,
            }
            for record in records
            for model in self.models
        ]

    def _annotate(self, todo: list[WorkUnit], task: Any) -> dict[str, list[Item]]:
        """Push what was never pushed (task ids stored at once), then pull everything."""
        plugin: Any = self.plugin
        tasks = self.store.external_tasks([i.cache_key for i in todo])
        unpushed = [i for i in todo if i.cache_key not in tasks]
        size = self.step.options.batch_size
        for start in range(0, len(unpushed), size):
            batch = unpushed[start : start + size]
            ids = plugin.push([i.payload for i in batch])
            self.store.save_external_tasks(
                self.step_run_id,
                self.step_key,
                [(i.cache_key, i.key, ext) for i, ext in zip(batch, ids, strict=True)],
            )
            tasks.update({i.cache_key: ext for i, ext in zip(batch, ids, strict=True)})
        results: dict[str, list[Item]] = {}
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            pulled = plugin.pull([(i.payload, tasks[i.cache_key]) for i in batch])
            self._commit(batch, pulled, results)
            self.progress.advance(task, sum(r is not None for r in pulled))
        return results

    # -- whole-input kinds: train, export -------------------------------------------------------

    def whole_input_key(self, items: list[Item]) -> tuple[list[Item], str, str]:
        """(distinct items, their content hash, the step's single cache key)."""
        unique = list({item.key(): item for item in items}.values())
        content_hash = digest("dataset", [item.key() for item in unique])
        return unique, content_hash, digest(self.step_key, content_hash)

    def without_test_pairs(self, items: list[Item]) -> list[Item]:
        """A training step's input with no pair the store holds out for testing: refused before
        anything trains, or left out (counted) when the trainer's policy says so."""
        held_out = held_out_among(items, held_out_pairs(self.store, [i.pair.id for i in items]))
        if self.plugin.held_out_policy() == "refuse":  # type: ignore[attr-defined]
            refuse_held_out(held_out, len(items), self.step.id)
            return items
        kept = [item for item in items if item.pair.id not in held_out]
        if held_out:
            self.counts["held_out"] = len(items) - len(kept)
            event("step.held_out", step=self.step.id, items=len(items) - len(kept))
        return kept

    def show_metrics(self, task: Any) -> None:
        """Each metrics report of a long whole-input job (a training's step, loss, tokens/s) is
        stored as before and also shown on the step's progress bar."""
        context = self.plugin.context
        store_metrics = context.log_metrics
        if store_metrics is None:
            return
        label = f"{self.contract.key} {self.step.id}"

        def report(step: int, values: dict[str, float]) -> None:
            store_metrics(step, values)
            self.progress.describe(task, f"{label} · {metrics_line(step, values)}")

        context.log_metrics = report

    def produced_before(self, cache_key: str) -> list[Record] | None:
        """The records a whole-input step made for this exact input in an earlier run."""
        finished = self.store.finished([cache_key])
        if not finished:
            return None
        refs = finished[cache_key][0]
        records: list[Record] = []
        for record_type, record_id in refs.items():
            records.extend(self.store.records(record_type, [record_id]).values())
        return records

    def whole_input(self, items: list[Item]) -> tuple[StepOutcome, list[Item]]:
        if self.contract.trains:
            items = self.without_test_pairs(items)
        unique, content_hash, cache_key = self.whole_input_key(items)
        self.counts["inputs"] = len(unique)
        earlier = self.produced_before(cache_key)
        if earlier is not None:
            self.counts["cached"] = len(unique)
            self.produced = earlier
            return StepOutcome(self.step.id, "cached", self.step_run_id, self.counts), unique
        task = self.progress.add(f"{self.contract.key} {self.step.id}", 1)
        self.show_metrics(task)
        dataset = Dataset(
            name=self.step.id, content_hash=content_hash, format="items", count=len(unique)
        )
        records = self.plugin.produce(unique, dataset)  # type: ignore[attr-defined]
        dataset = next(r for r in records if isinstance(r, Dataset))
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
        self.store.save_batch(
            self.step_run_id,
            self.step_key,
            self.step.id,
            [CompletedSample(cache_key, content_hash, [{r.record_type: r.id for r in records}])],
            [],
            records,
            edges,
        )
        self.produced = records
        self.counts["done"] = len(unique)
        self.progress.advance(task, 1)
        return StepOutcome(self.step.id, "complete", self.step_run_id, self.counts), unique


__all__ = ["SampleOutcome", "StepExecution", "StepOutcome", "WorkUnit"]
