"""Loading plugins from entry points, each in isolation, and the registry they fill.

A plugin that fails to import, or whose hook raises, is recorded as broken and shown by
``ecap plugins list`` / ``ecap plugins doctor``; every other plugin and command keeps working.
Two plugins registering the same name is an error naming both packages, raised when the name is
used, so that an unrelated command still works.

``ECAP_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none);
``ECAP_BLOCK_PLUGINS=a,b`` skips the named ones.
"""

from __future__ import annotations

import functools
import os
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import PluginError, did_you_mean

if TYPE_CHECKING:  # imported when a registry is built: ``ecap --help`` and the cache need neither
    import pluggy

    from .interfaces import Plugin

ENTRY_POINT_GROUP = "ecap"


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    cls: type[Plugin]
    package: str  # distribution that provides it
    version: str  # that distribution's version
    entry_point: str


@dataclass(frozen=True)
class BrokenPlugin:
    entry_point: str
    package: str
    error: str
    detail: str


@dataclass(frozen=True)
class ServiceInfo:
    """A registered shared service (a VLM backend, a report section): its lazy target and who
    registered it."""

    name: str
    target: Any  # "module:Class", or the class itself
    package: str
    version: str


@dataclass
class Registry:
    """What the loaded plugins registered. A registry made by :meth:`deferred` starts with no
    plugin loaded: :meth:`get` loads the one plugin its index names for the kind and name asked
    for, and everything else (listing names, services, conflicts, the plugin manager) loads the
    rest first, so a reader never sees a partial registry."""

    _plugins: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)
    _vlm_backends: dict[str, ServiceInfo] = field(default_factory=dict)
    _report_sections: dict[str, ServiceInfo] = field(default_factory=dict)
    _conflicts: dict[tuple[str, str], list[PluginInfo]] = field(default_factory=dict)
    _broken: list[BrokenPlugin] = field(default_factory=list)
    _manager: pluggy.PluginManager | None = None
    #: entry points not loaded yet, and which of them registers each (kind, name)
    _pending: list[metadata.EntryPoint] = field(default_factory=list)
    _index: dict[tuple[str, str], str] = field(default_factory=dict)
    _loading: threading.RLock = field(default_factory=threading.RLock, repr=False)
    #: (kind, name) -> the name of the plugin (entry point) whose hook registered it
    providers: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def deferred(
        cls, entry_points: list[metadata.EntryPoint], index: dict[tuple[str, str], str]
    ) -> Registry:
        """A registry of ``entry_points`` that loads each only when asked for something it
        registers. ``index`` is a full registry's :attr:`providers` for the same entry points
        and code (``ecap.cli.plugin_cache`` keeps it); a name it does not know, or one its plugin
        does not register, loads every plugin (an index that misses costs time, not an
        answer)."""
        return cls(_pending=list(entry_points), _index=dict(index))

    @property
    def complete(self) -> bool:
        return not self._pending

    def load_all(self) -> Registry:
        with self._loading:  # another thread asking meanwhile waits for the whole load
            pending, self._pending = self._pending, []
            if pending:
                _load_into(self, pending)
        return self

    @property
    def plugins(self) -> dict[tuple[str, str], PluginInfo]:
        return self.load_all()._plugins

    @property
    def vlm_backends(self) -> dict[str, ServiceInfo]:
        return self.load_all()._vlm_backends

    @property
    def report_sections(self) -> dict[str, ServiceInfo]:
        return self.load_all()._report_sections

    @property
    def conflicts(self) -> dict[tuple[str, str], list[PluginInfo]]:
        return self.load_all()._conflicts

    @property
    def broken(self) -> list[BrokenPlugin]:
        return self.load_all()._broken

    @property
    def manager(self) -> pluggy.PluginManager | None:
        return self.load_all()._manager

    def names(self, kind: str) -> list[str]:
        return sorted({n for (k, n) in [*self.plugins, *self.conflicts] if k == kind})

    def get(self, kind: str, name: str) -> PluginInfo:
        """The plugin registered as ``name`` for a spec kind key, or an error that helps."""
        self._load_provider_of(kind, name)
        if (kind, name) in self._conflicts:
            owners = " and ".join(
                f"'{p.package}' ({p.entry_point})" for p in self._conflicts[kind, name]
            )
            raise PluginError(
                f"{kind} plugin '{name}' is registered by both {owners}; "
                "uninstall one, or block one with ECAP_BLOCK_PLUGINS"
            )
        try:
            return self._plugins[kind, name]
        except KeyError:
            broken = [b.entry_point for b in self.broken]
            hint = f" (plugins that failed to load: {', '.join(broken)})" if broken else ""
            raise PluginError(
                f"unknown {kind} plugin '{name}'{did_you_mean(name, self.names(kind))}{hint}"
            ) from None

    def _load_provider_of(self, kind: str, name: str) -> None:
        """Load the pending plugin that registers (kind, name); every pending one when the
        index does not know the name (an error message then lists all the names there are)."""
        if (kind, name) in self._plugins:
            return
        with self._loading:  # waits for a load another thread is making
            if (kind, name) in self._plugins or not self._pending:
                return
            provider = self._index.get((kind, name))
            wanted = [ep for ep in self._pending if ep.name == provider]
            if wanted:
                self._pending = [ep for ep in self._pending if ep.name != provider]
                _load_into(self, wanted)
            if (kind, name) not in self._plugins:  # unknown, or the index was wrong
                self.load_all()

    def add(self, info: PluginInfo) -> None:
        key = (info.kind, info.name)
        if key in self._conflicts:
            self._conflicts[key] = sorted([*self._conflicts[key], info], key=lambda p: p.package)
        elif key in self._plugins and self._plugins[key].cls is not info.cls:
            self._conflicts[key] = sorted([self._plugins.pop(key), info], key=lambda p: p.package)
        else:
            self._plugins[key] = info


def _csv_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _dist_of(module: ModuleType | Any) -> tuple[str, str]:
    """(distribution name, version) for the top-level package of a plugin module."""
    top = getattr(module, "__name__", "").split(".")[0]
    for dist in _packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return top or "unknown", "0"


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    """Which distributions provide each top-level package, read once per process: it reads every
    installed distribution's file list (0.2 s here), and every registry with plugins registered
    directly (the test suite's fakes) asks it."""
    return metadata.packages_distributions()


def selected_entry_points() -> list[metadata.EntryPoint]:
    """The installed ``ecap`` entry points this process loads: all of them, less those that
    ``ECAP_LOAD_PLUGINS`` leaves out or ``ECAP_BLOCK_PLUGINS`` names. Reading them imports no
    plugin."""
    allow, block = _csv_env("ECAP_LOAD_PLUGINS"), _csv_env("ECAP_BLOCK_PLUGINS") or set()
    return [
        ep
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if (allow is None or ep.name in allow) and ep.name not in block
    ]


def build_registry(
    extra_plugins: list[tuple[str, object]] | None = None,
    entry_points: list[metadata.EntryPoint] | None = None,
) -> Registry:
    """Load entry points (each in its own try), then collect registrations kind by kind.

    ``extra_plugins`` are (name, hookimpl holder) registered directly; ``ecap.testing`` uses it to
    install fakes through exactly the same path. ``entry_points`` (default: every one selected)
    lets the command line load only the plugin whose command runs.
    """
    registry = Registry()
    _load_into(
        registry,
        selected_entry_points() if entry_points is None else entry_points,
        extra_plugins or [],
    )
    return registry


def _load_into(
    registry: Registry,
    entry_points: list[metadata.EntryPoint],
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> None:
    """Load ``entry_points`` into ``registry``'s plugin manager (made on first use) and collect
    what their hooks, and only theirs, register."""
    import pluggy

    from . import hookspecs
    from .interfaces import KINDS

    if registry._manager is None:
        registry._manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        registry._manager.add_hookspecs(hookspecs)
    pm = registry._manager

    owners: dict[str, tuple[str, str, str]] = {}  # plugin name in pm -> (package, version, ep)
    for ep in entry_points:
        package = ep.dist.name if ep.dist else "unknown"
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            registry._broken.append(
                BrokenPlugin(
                    ep.name, package, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                )
            )
            continue
        owners[ep.name] = (package, ep.dist.version if ep.dist else "0", ep.value)
    for name, holder in extra_plugins:
        pm.register(holder, name=name)
        owners[name] = (*_dist_of(holder), name)

    for kind, interface in KINDS.items():
        for impl in getattr(pm.hook, interface.contract.hook).get_hookimpls():
            if impl.plugin_name not in owners:
                continue  # loaded earlier: its registrations are in already
            package, version, ep_value = owners[impl.plugin_name]

            def register(
                name: str,
                cls: Any,
                *,
                _kind: str = kind,
                _p: str = package,
                _v: str = version,
                _ep: str = ep_value,
                _plugin: str = impl.plugin_name,
            ) -> None:
                _check_plugin_class(_kind, name, cls)
                registry.add(PluginInfo(_kind, name, cls, _p, _v, _ep))
                registry.providers[_kind, name] = _plugin

            _call_registration(registry, impl, package, register)
    for hook, what, into in (
        ("register_vlm_backends", "VLM backend", registry._vlm_backends),
        ("register_report_sections", "report section", registry._report_sections),
    ):
        _collect_services(registry, pm, owners, hook, what, into)


def _collect_services(
    registry: Registry,
    pm: pluggy.PluginManager,
    owners: dict[str, tuple[str, str, str]],
    hook: str,
    what: str,
    into: dict[str, ServiceInfo],
) -> None:
    """Call every implementation of a service hook (``register_vlm_backends`` ...), filling
    ``into`` by name; a name two packages register differently is that plugin's error."""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name not in owners:
            continue  # loaded earlier
        package, version, _ = owners[impl.plugin_name]

        def register(name: str, target: Any, *, _p: str = package, _v: str = version) -> None:
            known = into.get(name)
            if known is not None and known.target != target:
                raise PluginError(
                    f"{what} '{name}' is registered by both '{known.package}' and '{_p}'"
                )
            into[name] = ServiceInfo(name, target, _p, _v)

        _call_registration(registry, impl, package, register)


def _call_registration(registry: Registry, impl: Any, package: str, register: Any) -> None:
    """Run one plugin's registration hook; a hook that raises makes that plugin broken (shown
    by ``ecap plugins doctor``), never the whole registry."""
    try:
        impl.function(register=register)
    except Exception as exc:
        registry._broken.append(
            BrokenPlugin(
                impl.plugin_name, package, f"{type(exc).__name__}: {exc}", traceback.format_exc()
            )
        )


def _check_plugin_class(kind: str, name: str, cls: Any) -> None:
    from .interfaces import KINDS

    expected = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, expected)):
        raise PluginError(f"{kind} plugin '{name}' must be a subclass of {expected.__name__}")


_registry: Registry | None = None
_make_registry: Callable[[], Registry] = build_registry


def get_registry() -> Registry:
    """The process-wide registry, made on first use (see :func:`make_registries_with`)."""
    global _registry
    if _registry is None:
        _registry = _make_registry()
    return _registry


def make_registries_with(factory: Callable[[], Registry]) -> None:
    """How :func:`get_registry` makes the process-wide registry (default: every plugin loaded
    by :func:`build_registry`). The command line passes one that defers loading each plugin
    until it is asked for, when its cache says which plugin registers what."""
    global _make_registry
    _make_registry = factory


def built_registry() -> Registry | None:
    """The process-wide registry if it was made (or set) and every plugin of it is loaded, else
    ``None``: asking it anything would load nothing new."""
    return _registry if _registry is not None and _registry.complete else None


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (``None``: make a new one on next use). For tests."""
    global _registry
    _registry = registry
