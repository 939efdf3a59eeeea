"""``ecap pipeline run | validate | plan``."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

import click

from .common import console, emit, json_option, store_url
from .tables import note, samples

if TYPE_CHECKING:
    from ..executors import ExecutorConfig
    from ..spec import Spec
    from ..store import Store


@click.group("pipeline")
def group() -> None:
    """Validate, plan and run pipeline specs."""


def _store_for(spec: Spec, override: str | None) -> Store:
    from ..store import Store

    return Store(store_url(override or spec.store, spec.base_dir), auto_upgrade=True)


@group.command()
@click.argument("spec_path", type=click.Path(dir_okay=False))
@click.option("--store", "store_ref", default=None, help="Store URL (overrides the spec's).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Import only the first N rows of every source: try a spec on a few samples.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Fail a step when more than this share of its samples fail (overrides steps).",
)
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option(
    "--executor",
    "executor_type",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where model steps compute (overrides the spec's executor: type).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join with --executor ray ('auto', 'ray://head:10001').",
)
@click.option(
    "--worker",
    is_flag=True,
    help="One of several workers on this store: run the per-sample steps, share their samples "
    "with the other workers, and wait for human, train and export steps to be finished by a run "
    "without --worker.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds a claimed batch outlives a worker on another host that stopped renewing it.",
)
@json_option
def run(
    spec_path: str,
    store_ref: str | None,
    limit: int | None,
    max_error_rate: float | None,
    progress: bool,
    executor_type: str | None,
    address: str | None,
    worker: bool,
    lease_seconds: float,
    as_json: bool,
) -> None:
    """Run SPEC_PATH. Finished samples are served from the store; a killed run resumes."""
    from ..runner import Runner, RunOptions, interrupted_by_signals
    from ..spec import load_spec, preflight

    spec = load_spec(spec_path)
    preflight(spec)
    store = _store_for(spec, store_ref)
    runner = Runner(
        spec,
        store,
        RunOptions(
            limit=limit,
            max_error_rate=max_error_rate,
            progress=progress and not as_json,
            executor=_executor(spec, executor_type, address),
            worker=worker,
            lease_seconds=lease_seconds,
        ),
    )
    with interrupted_by_signals():
        result = runner.run()
    rows = [
        {"step": o.step_id, "status": o.status, **(o.counts or {}), "error": o.error or ""}
        for o in result.steps.values()
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run": result.run_id,
                    "status": result.status,
                    "store": store.redacted_url,
                    "steps": rows,
                },
                indent=2,
            )
        )
    else:
        emit(
            [
                {
                    "step": o.step_id,
                    "status": o.status,
                    "samples": samples(o.counts or {}),
                    "note": note(o.status, o.error),
                }
                for o in result.steps.values()
            ],
            False,
            columns=["step", "status", "samples", "note"],
            title=f"run {result.run_id}: {result.status}",
        )
        console().print(f"store: {store.redacted_url}")
        failed = sum((o.counts or {}).get("failed", 0) for o in result.steps.values())
        if failed or result.status == "failed":
            where = shlex.quote(store_ref or spec_path)
            what = f"{failed} sample{'s' if failed != 1 else ''} failed" if failed else "It failed"
            console().print(f"{what}; see why with:", markup=False)
            console().print(f"  ecap runs show {result.run_id} --store {where}", markup=False)
    if result.status == "failed":
        raise SystemExit(1)


def _executor(spec: Spec, executor_type: str | None, address: str | None) -> ExecutorConfig | None:
    """The spec's ``executor:`` with the command line's ``--executor``/``--address`` over it."""
    if executor_type is None and address is None:
        return spec.executor
    from ..executors import ExecutorConfig

    base = spec.executor or ExecutorConfig()
    changes: dict[str, Any] = {"type": executor_type or ("ray" if address else base.type)}
    if address is not None:
        changes["address"] = address
    return base.model_copy(update=changes)


@group.command()
@click.argument("spec_path", type=click.Path(dir_okay=False))
def validate(spec_path: str) -> None:
    """Check SPEC_PATH (plugins, configs, graph, input files) without running anything."""
    from ..spec import load_spec, preflight

    spec = load_spec(spec_path)
    preflight(spec)
    click.echo(f"{spec_path}: ok ({len(spec.steps)} steps: {' -> '.join(spec.order())})")


@group.command()
@click.argument("spec_path", type=click.Path(dir_okay=False))
@click.option("--store", "store_ref", default=None, help="Store URL (overrides the spec's).")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@json_option
def plan(spec_path: str, store_ref: str | None, limit: int | None, as_json: bool) -> None:
    """Show what a run would do: per step, how many samples are cached and how many would run."""
    from ..planner import plan_spec
    from ..spec import load_spec

    spec = load_spec(spec_path)
    rows: list[dict[str, Any]] = plan_spec(spec, _store_for(spec, store_ref), limit)
    if not as_json:  # versions and step keys are in --json; a terminal gets what to expect
        rows = [{**r, "plugin": f"{r['kind']}: {r['plugin']}"} for r in rows]
    emit(
        rows,
        as_json,
        columns=["step", "plugin", "from", "inputs", "cached", "to_run"],
        title=f"plan for {spec.name}",
    )
