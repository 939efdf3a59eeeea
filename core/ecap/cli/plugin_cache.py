"""What the command line shows of the installed plugins, kept between runs so that showing it
imports no plugin, and which plugin registers each name, so that running a spec imports only the
plugins it names.

``ecap --help`` lists the commands plugins add, and ``ecap plugins list`` describes every plugin;
learning either means importing every plugin and running its hooks (about 0.2 s on a 2-core
machine, more than all the rest of ``ecap --help``). So a command that has to build the registry
writes what it learned to a cache file, and later commands read it back as long as nothing it
came from has changed. The cache's key is a digest of:

- the interpreter, ``sys.path``, and every distribution installed on it (the names of the
  ``.dist-info`` folders carry their versions) with each one's modification time;
- the ``ecap`` entry points this process loads (``ECAP_LOAD_PLUGINS``/``ECAP_BLOCK_PLUGINS``
  applied) and their targets;
- the size and modification time of every Python file of ecap and of each plugin's top-level
  package (an editable install changes no version when its code changes).

With the cache current, the process-wide registry is made deferred
(:meth:`ecap.plugins.Registry.deferred`): ``ecap pipeline run`` of a spec that names only ``csv``
imports the csv plugin and no other (about 0.2 s saved of every command that reads a spec); a
name the cache does not know, or any question about all the plugins, loads them all.

A registry with a broken plugin, a conflict or a failing ``register_commands`` hook is never
cached: those are reported afresh by every command. A process that already holds a registry (a
test that set one) uses it and leaves the cache alone. An unreadable or unwritable cache costs
only time. ``ECAP_CACHE_DIR`` moves it (default ``$XDG_CACHE_HOME/ecap``, else
``~/.cache/ecap``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..plugins import Registry, build_registry, built_registry, selected_entry_points

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: Bumped when what the cache holds changes shape.
FORMAT = 2


@dataclass(frozen=True)
class PluginCommand:
    """A command a plugin's ``register_commands`` hook adds, as ``ecap --help`` lists it."""

    name: str
    plugin: str  # the entry point whose hook adds it: the only plugin loaded to run it
    help: str | None
    short_help: str | None
    hidden: bool
    deprecated: bool | str

    @classmethod
    def of(cls, plugin: str, name: str, command: click.Command) -> PluginCommand:
        return cls(
            name, plugin, command.help, command.short_help, command.hidden, command.deprecated
        )


@dataclass(frozen=True)
class Snapshot:
    """The plugins' commands, the rows of ``ecap plugins list``, and which plugin (entry point)
    registers each (kind, name)."""

    commands: list[PluginCommand]
    plugins: list[dict[str, str]]
    providers: list[tuple[str, str, str]]  # (kind, name, entry point name)


def snapshot() -> Snapshot:
    """From the cache when it is current; otherwise from the registry (built, then cached)."""
    registry = built_registry()
    if registry is not None:
        return _describe(registry)[0]
    return _cached(selected_entry_points())[0]


def registry_from_cache() -> Registry:
    """The process-wide registry for a command: deferred when the cache describes the installed
    plugins (each plugin loaded when first asked for), else every plugin loaded now (and the
    cache written, for the next command)."""
    entry_points = selected_entry_points()
    found, built = _cached(entry_points)
    if built is not None:
        return built
    return Registry.deferred(entry_points, {(k, n): p for k, n, p in found.providers})


def _cached(entry_points: list[EntryPoint]) -> tuple[Snapshot, Registry | None]:
    """The cache's snapshot when it is current (and no registry); otherwise a registry of every
    plugin, built now, and its snapshot, written to the cache unless something in it broke."""
    key = fingerprint(entry_points)
    cached = _read(key)
    if cached is not None:
        return cached, None
    registry = build_registry(entry_points=entry_points)
    found, clean = _describe(registry)
    if clean:
        _write(key, found)
    return found, registry


def plugin_commands(registry: Registry) -> tuple[list[tuple[str, str, click.Command]], bool]:
    """``(plugin, name, command)`` for every command the registry's plugins add, and whether every
    ``register_commands`` hook ran. A hook that raises is reported as a warning, not fatal."""
    if registry.manager is None:
        return [], True
    found: list[tuple[str, str, click.Command]] = []
    clean = True
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        collector = click.Group()
        try:
            impl.function(cli=collector)
        except Exception as exc:
            click.secho(
                f"warning: plugin '{impl.plugin_name}' failed to add commands: {exc}",
                fg="yellow",
                err=True,
            )
            clean = False
            continue
        found += [(impl.plugin_name, name, command) for name, command in collector.commands.items()]
    return found, clean


def load_command(declared: PluginCommand) -> click.Command | None:
    """The real command behind ``declared``, loading only the plugin that adds it."""
    from ..plugins import build_registry

    entry_points = [ep for ep in selected_entry_points() if ep.name == declared.plugin]
    commands, _ = plugin_commands(build_registry(entry_points=entry_points))
    return next((command for _, name, command in commands if name == declared.name), None)


def _describe(registry: Registry) -> tuple[Snapshot, bool]:
    from .plugins import plugin_rows

    commands, clean = plugin_commands(registry)
    found = Snapshot(
        [PluginCommand.of(plugin, name, command) for plugin, name, command in commands],
        plugin_rows(registry),
        sorted((kind, name, plugin) for (kind, name), plugin in registry.providers.items()),
    )
    return found, clean and not registry.broken and not registry.conflicts


def fingerprint(entry_points: list[EntryPoint]) -> str:
    """A digest of everything the registry is built from (see the module's docstring)."""
    digest = hashlib.sha256()

    def add(*parts: Any) -> None:
        digest.update(repr(parts).encode())

    add(FORMAT, sys.version, sys.executable, sys.path)
    for folder in sys.path:
        add(folder, *_distributions_in(folder))
    add([(ep.name, ep.value) for ep in entry_points])
    for top in sorted({"ecap", *(ep.module.split(".")[0] for ep in entry_points)}):
        add(top, *_source_files(top))
    return digest.hexdigest()


def _distributions_in(folder: str) -> list[tuple[str, int]]:
    """The distributions (with their versions) and ``.pth`` files in a ``sys.path`` folder, each
    with its modification time: installing, upgrading, reinstalling or removing anything there
    changes the list. The folder's own time is left out: a script's folder, or the working
    directory under ``python -m``, changes whenever a file is written there (a store, say)."""
    found = []
    try:
        with os.scandir(folder or ".") as entries:
            for entry in entries:
                if entry.name.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")):
                    try:
                        found.append((entry.name, entry.stat().st_mtime_ns))
                    except OSError:  # a dangling link: its name still counts
                        found.append((entry.name, 0))
    except OSError:  # a zip file or a folder that does not exist
        return []
    return sorted(found)


def _source_files(top: str) -> list[tuple[str, int, int]]:
    """(path, modification time, size) of every Python file of the top-level module ``top``,
    found as the import system would find it, without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if not spec.submodule_search_locations:
        files = [spec.origin] if spec.origin else []
    else:
        files = [
            os.path.join(root, name)
            for location in spec.submodule_search_locations
            for root, folders, names in os.walk(location)
            if "__pycache__" not in root
            for name in names
            if name.endswith(".py")
        ]
    stats = []
    for path in sorted(files):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        stats.append((path, stat.st_mtime_ns, stat.st_size))
    return stats


def cache_file() -> Path:
    """One file per interpreter: environments sharing a home folder do not evict each other."""
    folder = os.environ.get("ECAP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "ecap"
    )
    interpreter = hashlib.sha256(sys.executable.encode()).hexdigest()[:16]
    return Path(folder) / f"plugins-{interpreter}.json"


def _read(key: str) -> Snapshot | None:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return Snapshot(
            [PluginCommand(**c) for c in data["commands"]],
            data["plugins"],
            [(kind, name, plugin) for kind, name, plugin in data["providers"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(key: str, found: Snapshot) -> None:
    """Replace the cache file whole (a concurrent reader sees the old one or the new one)."""
    path = cache_file()
    data = {"key": key, **asdict(found)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
