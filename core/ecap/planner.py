"""``ecap pipeline plan``: what a run would compute and what it would serve from the store.

The plan uses the runner's own key computation, so it cannot disagree with what a run does. A
step's inputs are known when its upstream steps are fully cached; otherwise they are known only once
those steps run, and the plan says so.
"""

from __future__ import annotations

from typing import Any

from .progress import Progress
from .records import Item
from .runner import AGGREGATE_KINDS, Runner, RunOptions, _StepExecution, step_key_of
from .spec import Spec
from .store import Store


def plan_spec(spec: Spec, store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    runner = Runner(spec, store, RunOptions(limit=limit, progress=False))
    known: dict[str, list[Item] | None] = {}
    rows = []
    for step_id in spec.order():
        step = spec.steps[step_id]
        plugin = runner.plugin_for(step)
        key = step_key_of(step, plugin)
        row: dict[str, Any] = {
            "step": step_id,
            "kind": step.kind,
            "plugin": step.plugin.name,
            "version": step.plugin.version,
            "from": ",".join(step.inputs),
            "step_key": key,
            "inputs": "?",
            "cached": "?",
            "to_run": "?",
        }
        rows.append(row)
        upstream = [known.get(u) for u in step.inputs]
        if any(u is None for u in upstream):
            known[step_id] = None
            continue
        items = [item for u in upstream for item in u or []]
        execution = _StepExecution(runner, step, plugin, key, "", Progress(enabled=False))
        if step.kind in AGGREGATE_KINDS:
            unique, _, cache_key = execution.aggregate_key(items)
            done = bool(store.finished([cache_key]))
            row.update(
                inputs=len(unique),
                cached=len(unique) if done else 0,
                to_run=0 if done else len(unique),
            )
            known[step_id] = unique
            continue
        inputs = execution.inputs(items)
        finished = store.finished([i.cache_key for i in inputs])
        row.update(inputs=len(inputs), cached=len(finished), to_run=len(inputs) - len(finished))
        complete = len(finished) == len(inputs)
        known[step_id] = execution.outputs(inputs, finished, {}) if complete else None
        plugin.close()
    return rows
