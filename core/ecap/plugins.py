"""Loading plugins from entry points, each in isolation, and the registry they fill.

A plugin that fails to import, or whose hook raises, is recorded as broken and shown by
``ecap plugins list`` / ``ecap plugins doctor``; every other plugin and command keeps working.
Two plugins registering the same name is an error naming both packages, raised when the name is
used, so that an unrelated command still works.

``ECAP_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none);
``ECAP_BLOCK_PLUGINS=a,b`` skips the named ones.
"""

from __future__ import annotations

import os
import traceback
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
    plugins: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)
    vlm_backends: dict[str, ServiceInfo] = field(default_factory=dict)
    report_sections: dict[str, ServiceInfo] = field(default_factory=dict)
    conflicts: dict[tuple[str, str], list[PluginInfo]] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None

    def names(self, kind: str) -> list[str]:
        return sorted({n for (k, n) in [*self.plugins, *self.conflicts] if k == kind})

    def get(self, kind: str, name: str) -> PluginInfo:
        """The plugin registered as ``name`` for a spec kind key, or an error that helps."""
        if (kind, name) in self.conflicts:
            owners = " and ".join(
                f"'{p.package}' ({p.entry_point})" for p in self.conflicts[kind, name]
            )
            raise PluginError(
                f"{kind} plugin '{name}' is registered by both {owners}; "
                "uninstall one, or block one with ECAP_BLOCK_PLUGINS"
            )
        try:
            return self.plugins[kind, name]
        except KeyError:
            broken = [b.entry_point for b in self.broken]
            hint = f" (plugins that failed to load: {', '.join(broken)})" if broken else ""
            raise PluginError(
                f"unknown {kind} plugin '{name}'{did_you_mean(name, self.names(kind))}{hint}"
            ) from None

    def add(self, info: PluginInfo) -> None:
        key = (info.kind, info.name)
        if key in self.conflicts:
            self.conflicts[key] = sorted([*self.conflicts[key], info], key=lambda p: p.package)
        elif key in self.plugins and self.plugins[key].cls is not info.cls:
            self.conflicts[key] = sorted([self.plugins.pop(key), info], key=lambda p: p.package)
        else:
            self.plugins[key] = info


def _csv_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _dist_of(module: ModuleType | Any) -> tuple[str, str]:
    """(distribution name, version) for the top-level package of a plugin module."""
    top = getattr(module, "__name__", "").split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return top or "unknown", "0"


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
    import pluggy

    from . import hookspecs
    from .interfaces import KINDS

    registry = Registry()
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    registry.manager = pm

    owners: dict[str, tuple[str, str, str]] = {}  # plugin name in pm -> (package, version, ep)
    for ep in selected_entry_points() if entry_points is None else entry_points:
        package = ep.dist.name if ep.dist else "unknown"
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            registry.broken.append(
                BrokenPlugin(
                    ep.name, package, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                )
            )
            continue
        owners[ep.name] = (package, ep.dist.version if ep.dist else "0", ep.value)
    for name, holder in extra_plugins or []:
        pm.register(holder, name=name)
        owners[name] = (*_dist_of(holder), name)

    for kind, interface in KINDS.items():
        for impl in getattr(pm.hook, interface.contract.hook).get_hookimpls():
            package, version, ep_value = owners.get(impl.plugin_name, ("unknown", "0", "?"))

            def register(
                name: str,
                cls: Any,
                *,
                _kind: str = kind,
                _p: str = package,
                _v: str = version,
                _ep: str = ep_value,
            ) -> None:
                _check_plugin_class(_kind, name, cls)
                registry.add(PluginInfo(_kind, name, cls, _p, _v, _ep))

            _call_registration(registry, impl, package, register)
    for hook, what, into in (
        ("register_vlm_backends", "VLM backend", registry.vlm_backends),
        ("register_report_sections", "report section", registry.report_sections),
    ):
        _collect_services(registry, pm, owners, hook, what, into)
    return registry


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
        package, version, _ = owners.get(impl.plugin_name, ("unknown", "0", "?"))

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
        registry.broken.append(
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


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def built_registry() -> Registry | None:
    """The process-wide registry if it was built or set already, else ``None`` (nothing is
    loaded)."""
    return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (``None``: rebuild on next use). For tests."""
    global _registry
    _registry = registry
