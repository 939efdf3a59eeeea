"""``ecap provenance show | query``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .common import LazyChoice, console, emit, json_option, open_store, store_option
from .tables import cell

if TYPE_CHECKING:
    from rich.tree import Tree


def _record_types() -> list[str]:
    from ..records import RECORD_TYPES

    return sorted(RECORD_TYPES)


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
    from rich.tree import Tree

    from .. import provenance

    node = provenance.walk(open_store(store_ref), record_id, depth)
    if as_json:
        click.echo(json.dumps(node, indent=2, default=str))
        return
    tree = Tree(_label(node))
    _grow(tree, node)
    console().print(tree)


#: How each W3C PROV edge reads, by side: a record's own edges point to its origins; other
#: records' edges to it are its uses. A revision (``wasDerivedFrom``) is neither a use nor an input.
HEADINGS = {
    "origins": {"used": "came from", "wasDerivedFrom": "derived from"},
    "uses": {"used": "used by", "wasDerivedFrom": "derived from it"},
}


def _grow(branch: Tree, node: dict[str, Any]) -> None:
    """Add ``node``'s origins and uses under headings by edge kind, recursively."""
    for side, headings in HEADINGS.items():
        children = node.get(side, [])
        for verb in dict.fromkeys(child["verb"] for child in children):
            heading = branch.add(f"[bold]{headings.get(verb, verb)}[/bold]")
            for child in children:
                if child["verb"] == verb:
                    _grow_side(heading.add(_label(child)), child, side)
        if node.get(f"{side}_omitted"):
            branch.add(f"... and {node[f'{side}_omitted']} more {side}")


def _grow_side(branch: Tree, node: dict[str, Any], side: str) -> None:
    """Deeper levels follow one direction only, as the walk does."""
    for child in node.get(side, []):
        heading = HEADINGS[side].get(child["verb"], child["verb"])
        _grow_side(branch.add(f"{heading} {_label(child)}"), child, side)
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
        "score": lambda r: f"{r['scorer']} {cell(r['values'])}",
        "verdict": lambda r: f"{r['judge']} S={cell(r['weighted'])} {cell(r['axes'])}",
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
    type=LazyChoice(_record_types),
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
@click.option(
    "--like",
    is_flag=True,
    help="Read --step, --plugin and --run as SQL LIKE patterns (% and _ are wildcards).",
)
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
    like: bool,
    as_json: bool,
) -> None:
    """Records matching every filter, newest first. Values match literally unless --like."""
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
        like=like,
    )
    columns = QUERY_COLUMNS.get(record_type, ["id"])
    emit(rows, as_json, columns=columns, title=f"{len(rows)} {record_type} records")


#: What ``provenance query`` shows of each record type in a terminal (``--json`` has everything),
#: free text last so that it takes the room that is left.
QUERY_COLUMNS = {
    "pair": ["id", "category", "source", "target"],
    "instruction": ["id", "pair_id", "origin", "author", "text"],
    "reference": ["id", "pair_id", "overall"],
    "score": ["id", "instruction_id", "scorer", "values"],
    "verdict": ["id", "instruction_id", "judge", "weighted", "axes"],
    "preference": ["id", "pair_id", "chosen_id", "rejected_id"],
    "dataset": ["id", "name", "format", "count", "uri"],
    "model": ["id", "name", "revision", "uri"],
}
