"""``ecap dataset``: freeze training data from the store by hand, and list what was frozen.

A train step freezes its own input; ``ecap dataset build`` does the same for data that leaves
ecap (a TRL script elsewhere, a colleague's cluster): it picks each pair's instruction, balances
categories, splits by pair id, writes each split through an exporter, and records each split as
a content-hashed Dataset with ``used`` edges to its pairs. A test split recorded this way is a
fact the store keeps: no train step can use its pairs afterwards.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EcapError
from .common import console, emit, json_option, store_option, store_url
from .export import exporter_for, per_sample_outputs, settings_from

if TYPE_CHECKING:
    from ..datasets import FrozenSplit
    from ..store import Store

#: Where each file format's output goes inside ``--output``: ``train.jsonl`` or ``train/``.
SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": ""}


@click.group("dataset")
def group() -> None:
    """Freeze training data from the store (splits by pair id, recorded with lineage)."""


@group.command("build")
@click.option("--step", "step_id", required=True, help="Step whose outputs to freeze.")
@click.option("--run", "run_id", default=None, help="Run (id or prefix); default: the latest.")
@click.option("--name", default=None, help="Dataset name; default: the step's id.")
@click.option(
    "--format",
    "fmt",
    default="sft",
    show_default=True,
    help="An exporter plugin: sft or dpo (TRL's rows), jsonl, parquet, hf, or one a plugin adds.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="Folder to write the splits into."
)
@click.option(
    "--instructions",
    type=click.Choice(["human-first", "as-given"]),
    default="human-first",
    show_default=True,
    help="human-first: each pair's latest human instruction in the store (a refinement from "
    "any run), else the step's own (a kept model caption); as-given: the step's own.",
)
@click.option(
    "--balance", is_flag=True, help="Keep as many pairs of each category as the smallest has."
)
@click.option(
    "--per-category", type=click.IntRange(min=1), default=None, help="At most N pairs per category."
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    help="Share of pairs for validation, by pair-id hash.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    help="Share of pairs held out for testing, by pair-id hash (never trained on afterwards).",
)
@click.option(
    "--with",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A field of the exporter's config (repeatable), e.g. --with images=bytes.",
)
@store_option
@json_option
def build(
    step_id: str,
    run_id: str | None,
    name: str | None,
    fmt: str,
    output: str,
    instructions: str,
    balance: bool,
    per_category: int | None,
    validation_fraction: float,
    test_fraction: float,
    settings: tuple[str, ...],
    store_ref: str | None,
    as_json: bool,
) -> None:
    """Freeze what STEP produced into train/validation/test splits, written and recorded.

    Pairs whose source declared them test (benchmarks) are always in the test split; the rest
    are split by a hash of the pair id, so a pair never changes sides between builds."""
    from ..datasets import balance_categories, freeze, latest_human_instructions, prefer_human
    from ..store import Store

    if balance and per_category is not None:
        raise EcapError("--balance and --per-category both cap categories; give one of them")
    store = Store(store_url(store_ref))  # this command writes: the datasets and their lineage
    step_run, items = per_sample_outputs(store, step_id, run_id)
    if instructions == "human-first":
        items = prefer_human(
            items, latest_human_instructions(store, [i.pair.id for i in items if not i.preference])
        )
    if balance or per_category is not None:
        items = balance_categories(items, per_category)
    if not items:
        raise EcapError(f"step '{step_id}' left nothing to freeze after selection")
    selection = {
        "step": step_id,
        "step_run": step_run["id"],
        "instructions": instructions,
        "per_category": per_category
        if per_category is not None
        else ("smallest" if balance else None),
    }
    frozen = freeze(
        items,
        name or step_id,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        selection=selection,
    )
    written = _write(frozen, fmt, Path(output).resolve(), settings_from(settings), store)
    _record(store, written, fmt, step_id)
    rows = [
        {
            "split": side.split,
            "count": side.dataset.count,
            "dataset": side.dataset.id,
            "content_hash": side.dataset.content_hash[:16],
            "uri": side.dataset.uri,
            "categories": side.dataset.meta["categories"],
        }
        for side in written
    ]
    if as_json:
        emit(rows, True)
        return
    emit(rows, False, columns=("split", "count", "dataset", "content_hash", "uri"))
    console().print(f"froze {len(items)} items from step '{step_id}' as '{name or step_id}'")


def _write(
    frozen: list[FrozenSplit], fmt: str, folder: Path, settings: dict[str, Any], store: Store
) -> list[FrozenSplit]:
    """Each split written by the exporter to ``folder/<split>[.suffix]``; returned with the
    Dataset records' ``uri`` and ``format`` set to what was written."""
    from dataclasses import replace

    written = []
    for side in frozen:
        suffix = SUFFIXES.get(str(settings.get("format", fmt)), ".jsonl")
        target = folder / f"{side.split}{suffix}"
        split_fields = {
            "validation_fraction": side.dataset.meta["validation_fraction"],
            "test_fraction": side.dataset.meta["test_fraction"],
        }
        exporter = exporter_for(fmt, target, settings, store, extra=split_fields)
        result = exporter.export(side.items, side.dataset.content_hash)
        dataset = side.dataset.model_copy(update={"uri": result.uri, "format": result.format})
        written.append(replace(side, dataset=dataset))
    return written


def _record(store: Store, frozen: list[FrozenSplit], fmt: str, step_id: str) -> None:
    """The build as a run of its own with one step run, so each Dataset knows its run, its
    plugin and the command that made it, as every record written by a pipeline does."""
    from .. import __version__
    from ..hashing import digest
    from ..plugins import get_registry
    from ..store.store import CompletedSample

    info = get_registry().get("export", fmt)
    command = shlex.join(["ecap", *sys.argv[1:]])
    key = digest("dataset-build", [side.dataset.content_hash for side in frozen])
    run_id = store.start_run(
        name=f"dataset build {step_id}",
        spec_path="",
        spec_text=command,
        spec_hash=digest("command", command),
        ecap_version=__version__,
        plugins={f"export:{info.name}": f"{info.package} {info.version}"},
    )
    step_run_id = store.start_step(
        run_id=run_id,
        step_id=f"dataset:{frozen[0].dataset.meta['of']}",
        kind="export",
        plugin=info.name,
        plugin_version=info.version,
        package=info.package,
        config={"command": command},
        step_key=key,
    )
    store.save_batch(
        step_run_id,
        key,
        f"dataset:{frozen[0].dataset.meta['of']}",
        [CompletedSample(key, key, [{"dataset": side.dataset.id} for side in frozen])],
        [],
        [side.dataset for side in frozen],
        [edge for side in frozen for edge in side.edges(step_run_id)],
    )
    count = sum(side.dataset.count for side in frozen)
    store.finish_step(step_run_id, "complete", {"inputs": count, "done": count})
    store.finish_run(run_id, "complete")


@group.command("list")
@store_option
@json_option
def list_datasets(store_ref: str | None, as_json: bool) -> None:
    """Datasets in the store: frozen by train steps, exports and ``ecap dataset build``."""
    from ..datasets import stored_datasets
    from .common import open_store

    emit(
        stored_datasets(open_store(store_ref)),
        as_json,
        columns=("id", "name", "split", "count", "format", "created_at"),
    )
