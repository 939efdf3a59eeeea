"""``ecap plugins list | show | doctor`` and ``ecap schema``."""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

import click

from ..errors import PluginError, did_you_mean
from .common import LazyChoice, console, emit, json_option

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from ..plugins import Registry


def _kinds() -> list[str]:
    from ..interfaces import KINDS

    return sorted(KINDS)


@click.group("plugins")
def group() -> None:
    """Installed plugins: what they are, their settings, and which failed to load."""


@group.command("list")
@json_option
def list_plugins(as_json: bool) -> None:
    """Every registered plugin with its kind and what it does (``--json``: version and package
    too), and any broken ones."""
    from .plugin_cache import snapshot

    rows = snapshot().plugins
    emit(rows, as_json, columns=["kind", "name", "description"], title="ecap plugins")


def plugin_rows(registry: Registry) -> list[dict[str, str]]:
    """The rows of ``ecap plugins list``: every plugin, then conflicts, then broken ones."""
    rows = [
        {
            "kind": info.kind,
            "name": info.name,
            "version": info.version,
            "package": info.package,
            "status": "ok",
            "description": summary(info.cls),
        }
        for (_, _), info in sorted(registry.plugins.items())
    ]
    rows += [
        {
            "kind": kind,
            "name": name,
            "version": "",
            "status": "conflict",
            "package": " + ".join(p.package for p in infos),
            "description": "conflict: " + " + ".join(p.package for p in infos),
        }
        for (kind, name), infos in sorted(registry.conflicts.items())
    ]
    rows += [
        {
            "kind": "?",
            "name": b.entry_point,
            "version": "",
            "package": b.package,
            "status": f"broken: {b.error}",
            "description": f"broken: {b.error} (ecap plugins doctor)",
        }
        for b in registry.broken
    ]
    return rows


def summary(cls: type) -> str:
    """A plugin's one-line description: the first sentence of its class docstring, or of the
    nearest base class in the plugin's own package (never the kind's generic interface)."""
    package = cls.__module__.split(".", 1)[0]
    doc = next(
        (
            inspect.cleandoc(base.__dict__["__doc__"])
            for base in cls.__mro__
            if base.__module__.split(".", 1)[0] == package and base.__dict__.get("__doc__")
        ),
        "",
    )
    paragraph = " ".join(doc.split("\n\n", 1)[0].split()).replace("``", "")
    sentence = paragraph.split(". ", 1)[0].rstrip(".")
    return sentence or "(no description: the plugin class has no docstring)"


@group.command()
@click.argument("name")
@click.option(
    "--kind",
    type=LazyChoice(_kinds),
    default=None,
    help="Needed only when several kinds share NAME.",
)
@json_option
def show(name: str, kind: str | None, as_json: bool) -> None:
    """NAME's config schema: the fields its ``with:`` block takes."""
    from ..plugins import get_registry

    registry = get_registry()
    kinds = [kind] if kind else sorted({k for (k, n) in registry.plugins if n == name})
    if not kinds:
        names = {n for (_, n) in registry.plugins}
        raise PluginError(f"unknown plugin '{name}'{did_you_mean(name, names)}")
    if len(kinds) > 1:
        raise PluginError(f"'{name}' is a plugin of several kinds ({', '.join(kinds)}); add --kind")
    info = registry.get(kinds[0], name)
    schema = info.cls.Config.model_json_schema()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "kind": info.kind,
                    "name": info.name,
                    "version": info.version,
                    "package": info.package,
                    "config": schema,
                },
                indent=2,
            )
        )
        return
    console().print(
        f"[bold]{info.kind} plugin '{info.name}'[/bold] "
        f"({info.package} {info.version}, {info.cls.__module__}.{info.cls.__name__})"
    )
    if info.cls.__doc__:
        console().print(inspect.cleandoc(info.cls.__doc__), markup=False, highlight=False)
    fields = info.cls.Config.model_fields
    order = _declared_order(info.cls.Config)
    rows = [
        {
            "field": field,
            "type": _type_name(prop),
            "default": _default(fields[field]) if field in fields else "",
            "description": prop.get("description", ""),
        }
        for field, prop in sorted(schema.get("properties", {}).items(), key=lambda kv: order[kv[0]])
    ]
    emit(rows, False, columns=["field", "type", "default", "description"])


def _declared_order(config: type[BaseModel]) -> dict[str, int]:
    """Fields in the order a reader wants them: the plugin's own first, inherited ones after."""
    order: dict[str, int] = {}
    for cls in config.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in config.model_fields:
                order.setdefault(name, len(order))
    return order


def _type_name(prop: dict[str, Any]) -> str:
    """A JSON-schema property's type in a word or two: ``string``, ``number | null``."""
    options = prop.get("anyOf", [prop])
    names = [o.get("type") or o.get("$ref", "object").rsplit("/", 1)[-1] for o in options]
    return " | ".join(dict.fromkeys(str(n) for n in names))


def _default(field: FieldInfo) -> str:
    """What a field defaults to, short enough for a table cell."""
    if field.is_required():
        return "(required)"
    if field.default_factory is None:
        return json.dumps(field.default, default=str)
    from pydantic import BaseModel

    value = field.default_factory()  # type: ignore[call-arg]
    text = json.dumps(value.model_dump() if isinstance(value, BaseModel) else value, default=str)
    return text if len(text) <= 40 else "(built in; see --json)"


@group.command()
def doctor() -> None:
    """Explain every plugin that failed to load or is registered twice; exit 1 if any."""
    from ..plugins import get_registry

    registry = get_registry()
    for broken in registry.broken:
        click.secho(
            f"{broken.entry_point} (package {broken.package}) failed to load: {broken.error}",
            fg="red",
        )
        click.echo(broken.detail)
        click.echo(
            f"  fix it, `pip uninstall {broken.package}`, or skip it with "
            f"ECAP_BLOCK_PLUGINS={broken.entry_point}\n"
        )
    for (kind, name), infos in registry.conflicts.items():
        click.secho(
            f"{kind} plugin '{name}' is registered by {' and '.join(i.package for i in infos)}",
            fg="red",
        )
    if registry.broken or registry.conflicts:
        raise SystemExit(1)
    click.echo(f"all {len(registry.plugins)} plugins loaded")


@click.command("schema")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON (the only format; accepted so that every command takes --json).",
)
def schema(as_json: bool) -> None:
    """JSON Schema of pipeline specs, for editor completion and validation."""
    from ..interfaces import KINDS
    from ..plugins import get_registry
    from ..spec import StepOptions

    registry = get_registry()
    variants = []
    for kind in KINDS:
        for name in registry.names(kind):
            if (kind, name) not in registry.plugins:
                continue
            info = registry.plugins[kind, name]
            variants.append(
                {
                    "type": "object",
                    "title": f"{kind}: {name}",
                    "properties": {
                        kind: {"const": name},
                        "from": {
                            "anyOf": [
                                {"type": "string"},
                                {"type": "array", "items": {"type": "string"}},
                            ]
                        },
                        "with": info.cls.Config.model_json_schema(),
                        **StepOptions.model_json_schema()["properties"],
                    },
                    "required": [kind],
                    "additionalProperties": False,
                }
            )
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ecap pipeline spec",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "store": {"type": "string", "description": "SQLAlchemy URL of the store"},
            "steps": {"type": "object", "additionalProperties": {"anyOf": variants}},
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    click.echo(json.dumps(document, indent=2))
