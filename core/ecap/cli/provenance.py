"""``ecap provenance show | query``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.tree import Tree

from ..records import RECORD_TYPES
from .common import console, emit, json_option, open_store, store_option


@click.group("provenance")
def group() -> None:
    """Where any record came from, and what used it."""


@group.command()
@click.argument("record_id")
@store_option
@click.option("--depth", default=6, show_default=True, help="How many edges to follow.")
@json_option
def show(record_id: str, store_ref: str | None, depth: int, as_json: bool) -> None:
    """Walk RECORD_ID (or a unique prefix) back to its origins and forward to every use."""
    from .. import provenance

    node = provenance.walk(open_store(store_ref), record_id, depth)
    if as_json:
        click.echo(json.dumps(node, indent=2, default=str))
        return
    tree = Tree(_label(node))
    for side, title in (("origins", "came from"), ("uses", "used by")):
        if node.get(side) or node.get(f"{side}_omitted"):
            _grow(tree.add(f"[bold]{title}[/bold]"), node, side)
    console.print(tree)


def _grow(branch: Tree, node: dict[str, Any], side: str) -> None:
    for child in node.get(side, []):
        _grow(branch.add(f"{child['verb']} {_label(child)}"), child, side)
    if node.get(f"{side}_omitted"):
        branch.add(f"... and {node[f'{side}_omitted']} more")


def _label(node: dict[str, Any]) -> str:
    if node.get("missing"):
        return f"{node['type']} {node['id']} (not in this store)"
    record = node["record"]
    summary = {
        "pair": lambda r: (
            f"{r['source']['uri']} -> {r['target']['uri']}"
            + (f" [{r['category']}]" if r.get("category") else "")
            + (
                f" from {r['meta']['source_file']}:{r['meta'].get('row')}"
                if "source_file" in r["meta"]
                else ""
            )
        ),
        "instruction": lambda r: f'{r["origin"]} "{r["text"][:80]}"',
        "reference": lambda r: f'"{r["overall"][:80]}"',
        "score": lambda r: f"{r['scorer']} {r['values']}",
        "verdict": lambda r: f"{r['judge']} S={r['weighted']} {r['axes']}",
        "preference": lambda r: f"chosen {r['chosen_id']} over {r['rejected_id']}",
        "dataset": lambda r: f"{r['name']} ({r['count']} rows, {r['format']}) {r['uri'] or ''}",
        "model": lambda r: f"{r['name']} {r['uri']}",
    }[node["type"]](record)
    text = f"[cyan]{node['type']}[/cyan] {node['id']}: {summary}"
    made = node.get("generated_by")
    if made and "step_id" in made:
        text += (
            f"\n  made by step '{made['step_id']}' ({made['kind']}: {made['plugin']} "
            f"{made['plugin_version']}) in run {made['run_id']} ({made['run_name']})"
        )
    return text


@group.command()
@store_option
@click.option(
    "--type",
    "record_type",
    type=click.Choice(sorted(RECORD_TYPES)),
    default="instruction",
    show_default=True,
)
@click.option("--step", help="Made by this step id.")
@click.option("--plugin", help="Made by this plugin.")
@click.option("--run", help="Made in this run (id or prefix).")
@click.option("--origin", type=click.Choice(["model", "human", "reference"]))
@click.option("--score-name", help="Score value to bound (instructions and scores).")
@click.option("--min-score", type=float)
@click.option("--max-score", type=float)
@click.option("-n", "--limit", default=50, show_default=True)
@json_option
def query(
    store_ref: str | None,
    record_type: str,
    step: str | None,
    plugin: str | None,
    run: str | None,
    origin: str | None,
    score_name: str | None,
    min_score: float | None,
    max_score: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """Records matching every filter, newest first."""
    from .. import provenance

    rows = provenance.query(
        open_store(store_ref),
        record_type=record_type,
        step=step,
        plugin=plugin,
        run=run,
        origin=origin,
        score_name=score_name,
        min_score=min_score,
        max_score=max_score,
        limit=limit,
    )
    columns = [c for c in (rows[0] if rows else {"id": None}) if c not in ("meta", "created_at")]
    emit(rows, as_json, columns=columns, title=f"{len(rows)} {record_type} records")
