"""``ecap runs list | show``."""

from __future__ import annotations

import json

import click

from ..errors import EcapError
from .common import console, emit, json_option, open_store, store_option


@click.group("runs")
def group() -> None:
    """Past runs, their steps, and every sample that failed."""


@group.command("list")
@store_option
@click.option("-n", "--limit", default=50, show_default=True)
@json_option
def list_runs(store_ref: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first."""
    store = open_store(store_ref)
    rows = [
        {k: r[k] for k in ("id", "name", "status", "started_at", "finished_at", "spec_path")}
        for r in store.runs(limit)
    ]
    emit(rows, as_json, columns=["id", "name", "status", "started_at", "finished_at"], title="runs")


@group.command()
@click.argument("run_id", required=False)
@store_option
@json_option
def show(run_id: str | None, store_ref: str | None, as_json: bool) -> None:
    """One run (default: the latest): its steps, their counts, and each failed sample's error."""
    store = open_store(store_ref)
    run = store.run(run_id) if run_id else next(iter(store.runs(1)), None)
    if run is None:
        raise EcapError(f"no run {run_id or ''} in {store.redacted_url}".replace("  ", " "))
    steps = store.step_runs(run["id"])
    failures = store.failures([s["id"] for s in steps])
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run": {k: v for k, v in run.items() if k != "spec_text"},
                    "steps": steps,
                    "failures": failures,
                },
                indent=2,
                default=str,
            )
        )
        return
    console.print(
        f"[bold]run {run['id']}[/bold] {run['name']}: {run['status']} "
        f"(spec {run['spec_path']}, ecap {run['ecap_version']})"
    )
    if run["error"]:
        console.print(f"[red]{run['error']}[/red]")
    emit(
        [
            {
                "step": s["step_id"],
                "plugin": f"{s['kind']}:{s['plugin']} {s['plugin_version']}",
                "status": s["status"],
                **s["counts"],
                "error": s["error"],
            }
            for s in steps
        ],
        False,
        columns=[
            "step",
            "plugin",
            "status",
            "inputs",
            "cached",
            "done",
            "failed",
            "pending",
            "error",
        ],
    )
    if failures:
        emit(
            [
                {
                    "step": f["step_id"],
                    "input": f["input_key"],
                    "error": f["error_type"],
                    "message": f["message"],
                }
                for f in failures
            ],
            False,
            columns=["step", "input", "error", "message"],
            title="failed samples",
        )
