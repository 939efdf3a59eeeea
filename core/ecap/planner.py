"""``ecap pipeline plan``: what a run would compute and what it would serve from the store.

The plan uses the runner's own key computation and step execution, so it cannot disagree with
what a run does. A step's inputs are known when its upstream steps are fully cached; otherwise
they are known only once those steps run, and the plan says so. A step that uses a model from a
train step is known only when that train step is cached (its model is then read back).
"""

from __future__ import annotations

from typing import Any

from .progress import Progress
from .records import Item
from .runner import Runner, RunOptions
from .spec import Spec
from .store import Store


def plan_spec(spec: Spec, store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    runner = Runner(spec, store, RunOptions(limit=limit, progress=False))
    known: dict[str, list[Item] | None] = {}
    rows = []
    for step_id in spec.order():
        step = spec.steps[step_id]
        plugin = runner.plugin_for(step)
        row: dict[str, Any] = {
            "step": step_id,
            "kind": step.kind,
            "plugin": step.plugin.name,
            "version": step.plugin.version,
            "from": ",".join(step.needs),
            "step_key": "?",
            "inputs": "?",
            "cached": "?",
            "to_run": "?",
        }
        rows.append(row)
        upstream = [known.get(u) for u in step.inputs]
        if any(u is None for u in upstream) or any(
            m not in runner.models for m in step.models.values()
        ):
            known[step_id] = None
            continue
        key = runner.step_key(step, plugin)
        row["step_key"] = key
        items = [item for u in upstream for item in u or []]
        execution = runner.execution(step, plugin, key, "", Progress(enabled=False))
        if plugin.contract.shape == "whole_input":
            unique, _, cache_key = execution.whole_input_key(items)
            earlier = execution.produced_before(cache_key)
            done = earlier is not None
            row.update(
                inputs=len(unique),
                cached=len(unique) if done else 0,
                to_run=0 if done else len(unique),
            )
            if earlier is not None:
                execution.produced = earlier
                runner.remember_models(step, execution)
            known[step_id] = unique
            continue
        inputs = execution.inputs(items)
        finished = store.finished([i.cache_key for i in inputs])
        row.update(inputs=len(inputs), cached=len(finished), to_run=len(inputs) - len(finished))
        complete = len(finished) == len(inputs)
        known[step_id] = execution.outputs(inputs, finished, {}) if complete else None
        plugin.close()
    return rows
