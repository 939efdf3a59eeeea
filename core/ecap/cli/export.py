"""``ecap export``: write a step's outputs from the store, without re-running anything."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EcapError
from .common import console, open_store, store_option

if TYPE_CHECKING:
    from ..records import Item
    from ..store import Store


@click.command("export")
@click.option("--step", "step_id", required=True, help="Step whose outputs to export.")
@click.option("--run", "run_id", default=None, help="Run (id or prefix); default: the latest.")
@click.option(
    "--format",
    "fmt",
    default="jsonl",
    show_default=True,
    help="An exporter plugin: jsonl, parquet, hf, or one a plugin adds.",
)
@click.option("-o", "--output", required=True, type=click.Path(), help="File or folder to write.")
@click.option(
    "--with",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A field of the exporter's config, as a spec's with: block sets it (repeatable), "
    "e.g. --with images=bytes.",
)
@store_option
def group(
    step_id: str,
    run_id: str | None,
    fmt: str,
    output: str,
    settings: tuple[str, ...],
    store_ref: str | None,
) -> None:
    """Export what STEP produced (JSONL, Parquet, Hugging Face datasets, or TRL's sft/dpo rows)."""
    store = open_store(store_ref)
    step_run, items = per_sample_outputs(store, step_id, run_id)
    exporter = exporter_for(fmt, Path(output).resolve(), settings_from(settings), store)
    result = exporter.export(items, step_run["step_key"])
    console().print(f"wrote {len(items)} items from step '{step_id}' to {result.uri}")


def per_sample_outputs(
    store: Store, step_id: str, run_id: str | None
) -> tuple[dict[str, Any], list[Item]]:
    """The latest run of ``step_id`` (in ``run_id`` if given) and its output items, or an error
    saying why a step has none to export (it never ran, or it makes one model or file)."""
    from ..interfaces import KINDS

    step_run = store.latest_step_run(step_id, run_id)
    if step_run is None:
        raise EcapError(f"no step '{step_id}' in {'run ' + run_id if run_id else 'any run'}")
    kind = KINDS.get(step_run["kind"])
    if kind is not None and kind.contract.shape == "whole_input":
        made = kind.contract.produces or "result"
        raise EcapError(
            f"step '{step_id}' ({step_run['kind']}: {step_run['plugin']}) makes one {made} from "
            "its whole input, not per-sample outputs; export a per-sample step instead (a "
            "source, caption, filter, judge or annotate step), e.g. the one it reads from"
        )
    return step_run, store.step_outputs(step_run["step_key"])


def exporter_for(
    fmt: str,
    target: Path,
    settings: dict[str, Any],
    store: Store,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The ``fmt`` exporter configured to write ``target``, with ``settings`` (from ``--with``)
    and those of ``extra`` that its config has."""
    from ..interfaces import PluginContext
    from ..plugins import get_registry

    info = get_registry().get("export", fmt)
    fields = info.cls.Config.model_fields
    config = {
        **{k: v for k, v in (extra or {}).items() if k in fields},
        **settings,
        "path": target.name,
    }
    context = PluginContext(
        step_id=f"export-{target.stem}",
        base_dir=target.parent,
        work_dir=target.parent,
        records=store.records,  # an exporter may need records the items only name (dpo's texts)
    )
    return info.cls(info.cls.Config.model_validate(config), context)


def settings_from(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` options as config fields, each value read as YAML reads a spec's scalar
    (``0.1`` a number, ``true`` a boolean, anything else a string)."""
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EcapError(f"--with {pair!r}: expected KEY=VALUE, e.g. --with images=bytes")
        if key.strip() == "path":
            raise EcapError("--with path=...: the output path is -o/--output")
        settings[key.strip()] = yaml.safe_load(value) if value else value
    return settings
