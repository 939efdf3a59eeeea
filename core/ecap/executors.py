"""Where a step's batches are computed: in this process (the default) or on a Ray cluster.

An executor decides one thing: how a batch of payloads becomes the plugin's raw results, and how
many batches may be in flight. Everything around it stays in :class:`ecap.execution.StepExecution`
and is the same for every executor: the store's claims (which batch this process computes),
retries, turning results into items, and committing each batch in one transaction. So a job
killed on a Ray cluster resumes from the store's per-sample completion, never from Ray's state.

- :class:`LocalExecutor` is the in-process path: a coroutine plugin keeps up to ``concurrency``
  batches in flight on the event loop; any other plugin runs one batch at a time in a thread.
- :class:`RayExecutor` builds ``replicas`` copies of the step's plugin on Ray actors (each with
  ``num_gpus_per_replica`` and ``num_cpus_per_replica``) and sends them the batches of model
  steps (captioners, filters, judges): plugins without a coroutine method, and plugins that run
  a local VLM backend (:class:`ecap.vlm.LocalBackend`). Sources read files in the driver, and
  network-bound plugins (hosted captioners, LLM judges) stay there too, under their own
  concurrency and rate limits: one process holding one rate limit keeps a provider's quota.

Ray is imported only when a Ray executor opens a step (``pip install 'editcaption[ray]'``).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import EcapError
from .interfaces import Plugin, PluginConfig, PluginContext, has_async, require

if TYPE_CHECKING:
    from .models import ResolvedModel
    from .spec import Step

LOGGER = logging.getLogger("ecap.executors")


class ExecutorConfig(BaseModel):
    """The spec's ``executor:`` block (or ``ecap pipeline run --executor ...``). Transport only:
    where work runs never enters a cache key, so moving a spec to a cluster recomputes nothing."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://head:10001'); none starts a local one",
    )
    replicas: int = Field(1, ge=1, description="plugin copies (Ray actors) per model step")
    num_gpus_per_replica: float = Field(0, ge=0, description="GPUs each replica reserves")
    num_cpus_per_replica: float = Field(1, ge=0, description="CPUs each replica reserves")
    batches_per_replica: int = Field(
        2,
        ge=1,
        description="batches queued on each replica: the next is ready while one is committed",
    )


@dataclass(frozen=True)
class BatchCalls:
    """How one step's batches are computed: ``call(payloads)`` returns the plugin's raw results
    for them, and ``window`` is how many batches may be in flight at once."""

    call: Callable[[list[Any]], Awaitable[Sequence[Any]]]
    window: int


@dataclass(frozen=True)
class PluginRecipe:
    """What rebuilds a step's plugin in another process, as plain data: its class (imported there
    by name), its validated config, where it runs, and the models its ``{step: NAME}`` fields
    resolved to in the driver. Store access (call log, records) stays with the driver."""

    plugin_cls: type[Plugin]
    config: PluginConfig
    step_id: str
    base_dir: Path
    work_dir: Path
    limit: int | None = None
    trained: dict[str, ResolvedModel] = field(default_factory=dict)

    @classmethod
    def of(cls, step: Step, plugin: Plugin) -> PluginRecipe:
        from .models import StepModel

        context = plugin.context
        trained = {name: context.model(StepModel(step=name)) for name in set(step.models.values())}
        return cls(
            type(plugin),
            plugin.config,
            step.id,
            context.base_dir,
            context.work_dir,
            context.limit,
            trained,
        )

    def build(self) -> Plugin:
        context = PluginContext(
            step_id=self.step_id,
            base_dir=self.base_dir,
            work_dir=self.work_dir,
            limit=self.limit,
            logger=logging.getLogger(f"ecap.step.{self.step_id}"),
            resolve_model=self.resolve_model,
        )
        return self.plugin_cls(self.config, context)

    def resolve_model(self, ref: Any) -> ResolvedModel:
        from .models import StepModel, resolve_model

        if isinstance(ref, StepModel):
            if ref.step not in self.trained:
                raise EcapError(f"model {{step: {ref.step}}} was not resolved by the driver")
            return self.trained[ref.step]
        return resolve_model(ref, self.base_dir)


class Executor(ABC):
    """Computes the batches of per-sample steps; :meth:`open` is entered once per step."""

    @abstractmethod
    def open(self, step: Step, plugin: Plugin) -> Any:
        """A context manager giving the step's :class:`BatchCalls`, releasing what it started."""


def local_calls(step: Step, plugin: Plugin) -> BatchCalls:
    """The in-process path: a coroutine plugin's batches on the event loop, ``concurrency`` at a
    time; any other plugin's in a worker thread (so it may run its own event loop inside), one at
    a time."""
    contract = plugin.contract
    if contract.async_method is not None and has_async(plugin, contract.async_method):
        coroutine = getattr(plugin, contract.async_method)
        return BatchCalls(coroutine, step.options.concurrency)
    return BatchCalls(partial(asyncio.to_thread, getattr(plugin, contract.method)), 1)


class LocalExecutor(Executor):
    @contextmanager
    def open(self, step: Step, plugin: Plugin) -> Iterator[BatchCalls]:
        yield local_calls(step, plugin)


def computes_locally(plugin: Plugin) -> bool:
    """Whether a plugin's batches are model computation (worth a replica per accelerator)
    rather than reading files or calling a server: a step that takes input (a captioner, filter
    or judge, not a source) and has no coroutine method, or runs a local VLM backend behind it."""
    contract = plugin.contract
    if not contract.takes_input:
        return False  # a source reads its own files, where the spec is
    if contract.async_method is None or not has_async(plugin, contract.async_method):
        return True
    from .vlm import LocalBackend

    return isinstance(getattr(plugin, "backend", None), LocalBackend)


class RayExecutor(Executor):
    """Model steps on a pool of Ray actors, one plugin replica each.

    Plain actors with a bounded in-flight window rather than a Ray Data pipeline: the store's
    claims hand out work one batch at a time, when a replica is free, so that other workers on the
    same store get the rest; a Ray Data pipeline wants its whole input up front and keeps its own
    progress, which is exactly the state a resumed job must not depend on. Each result comes back
    to the driver as soon as it is ready and is committed there.
    """

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def _ray(self) -> Any:
        """Ray, joined to the configured cluster (or a local one) once per process; it stays up
        for the next model step and ends with the process."""
        ray = require("ray", "ray")
        if not ray.is_initialized():
            ray.init(address=self.config.address, logging_level=logging.WARNING)
        return ray

    @contextmanager
    def open(self, step: Step, plugin: Plugin) -> Iterator[BatchCalls]:
        if not computes_locally(plugin):
            yield local_calls(step, plugin)  # network-bound: the driver's concurrency and limits
            return
        ray = self._ray()
        replicas = RayReplicas(ray, PluginRecipe.of(step, plugin), self.config)
        try:
            yield BatchCalls(replicas.call, replicas.window)
        finally:
            replicas.close()


class RayReplicas:
    """``replicas`` actors holding the step's plugin; each batch goes to the least busy one."""

    def __init__(self, ray: Any, recipe: PluginRecipe, config: ExecutorConfig) -> None:
        self.ray = ray
        actor_class = ray.remote(
            num_cpus=config.num_cpus_per_replica,
            num_gpus=config.num_gpus_per_replica,
            max_restarts=2,  # a replica that dies is rebuilt; the batch it held is retried
            max_task_retries=0,  # retries are the runner's (``retries:``), with its backoff
        )(PluginReplica)
        self.actors = [actor_class.remote(recipe) for _ in range(config.replicas)]
        self.window = config.replicas * config.batches_per_replica
        self._load = dict.fromkeys(range(len(self.actors)), 0)
        try:  # a plugin that cannot even be built fails the step, as it would in the driver
            ray.get([actor.ready.remote() for actor in self.actors])
        except ray.exceptions.RayError as exc:
            self._end()
            raise EcapError(f"a replica of step '{recipe.step_id}' could not start: {exc}") from exc

    async def call(self, payloads: list[Any]) -> Sequence[Any]:
        index = min(self._load, key=self._load.__getitem__)
        self._load[index] += 1
        try:
            return await self.actors[index].run.remote(payloads)
        finally:
            self._load[index] -= 1

    def close(self) -> None:
        """Let each replica free its model, then end the actors."""
        closing = [actor.close.remote() for actor in self.actors]
        try:
            self.ray.get(closing, timeout=60)
        except Exception as exc:  # a replica that cannot close is ended anyway
            LOGGER.warning(f"a replica did not close cleanly: {exc}")
        self._end()

    def _end(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class PluginReplica:
    """One copy of a step's plugin inside a Ray actor. Batches arrive one at a time; a coroutine
    plugin (a local VLM backend) runs on one event loop kept for the replica's life, so whatever
    the plugin binds to its loop stays valid from batch to batch."""

    def __init__(self, recipe: PluginRecipe) -> None:
        self.plugin = recipe.build()
        contract = self.plugin.contract
        self.loop = asyncio.new_event_loop()
        self.coroutine = (
            getattr(self.plugin, contract.async_method)
            if contract.async_method and has_async(self.plugin, contract.async_method)
            else None
        )
        self.method = getattr(self.plugin, contract.method)

    def ready(self) -> bool:
        """Answers once the plugin is built (its constructor ran without raising)."""
        return True

    def run(self, payloads: list[Any]) -> Sequence[Any]:
        if self.coroutine is not None:
            return self.loop.run_until_complete(self.coroutine(payloads))
        return self.method(payloads)

    def close(self) -> None:
        self.plugin.close()
        self.loop.close()


def make_executor(config: ExecutorConfig | None) -> Executor:
    if config is None or config.type == "local":
        return LocalExecutor()
    return RayExecutor(config)


__all__ = [
    "BatchCalls",
    "Executor",
    "ExecutorConfig",
    "LocalExecutor",
    "PluginRecipe",
    "RayExecutor",
    "computes_locally",
    "local_calls",
    "make_executor",
]
