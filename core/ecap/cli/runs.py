"""``ecap runs list | show``."""

from __future__ import annotations

import json

import click

from ..errors import EcapError
from .common import console, emit, json_option, open_store, store_option
from .tables import note, samples, short_ids, took


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
    if not as_json:
        rows = [{**r, "took": took(r["started_at"], r["finished_at"])} for r in rows]
    emit(rows, as_json, columns=["id", "name", "status", "started_at", "took"], title="runs")


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
    console().print(
        f"[bold]run {run['id']}[/bold] {run['name']}: {run['status']} "
        f"(spec {run['spec_path']}, ecap {run['ecap_version']})"
    )
    if run["error"]:
        console().print(f"[red]{run['error']}[/red]")
    emit(
        [
            {
                "step": s["step_id"],
                "plugin": s["plugin"],
                "status": s["status"],
                "samples": samples(s["counts"]),
                "note": note(s["status"], s["error"]),
            }
            for s in steps
        ],
        False,
        columns=["step", "plugin", "status", "samples", "note"],
    )
    if failures:
        # A list, not a table: the message is what the reader needs, and it is long.
        console().print(f"[bold]{len(failures)} failed samples[/bold]")
        inputs = short_ids([f["input_key"] for f in failures])
        for f in failures:
            console().print(
                f"- {f['step_id']} (input {inputs[f['input_key']]}): "
                f"{f['error_type']}: {f['message']}",
                markup=False,
                highlight=False,
            )
