"""Every hook a plugin can implement.

One registration hook per plugin kind, named by the kind's interface
(:class:`ecap.interfaces.KindContract`): ``register_captioners(register)``,
``register_filters(register)`` and so on. The plugin calls ``register(name, PluginClass)`` for each
plugin it offers; ``PluginClass`` lives in a module that imports nothing heavy at load time. The
kind hooks are written out from the interfaces' contracts below, so a new kind needs no edit here.

Shared services and commands have their own hooks: :func:`register_vlm_backends`,
:func:`register_report_sections`, :func:`register_commands`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from .interfaces import KINDS

hookspec = pluggy.HookspecMarker("ecap")
hookimpl = pluggy.HookimplMarker("ecap")

Register = Callable[[str, Any], None]


def _kind_hook(interface: type) -> Callable[[Register], None]:
    contract = interface.contract  # type: ignore[attr-defined]

    def register_kind(register: Register) -> None: ...

    register_kind.__name__ = register_kind.__qualname__ = contract.hook
    register_kind.__module__ = __name__
    register_kind.__doc__ = (
        f"Register :class:`~ecap.interfaces.{interface.__name__}` plugins, usable as "
        f"``{contract.key}:`` steps: {contract.summary}."
    )
    return hookspec(register_kind)


for _interface in KINDS.values():
    globals()[_interface.contract.hook] = _kind_hook(_interface)


@hookspec
def register_vlm_backends(register: Register) -> None:
    """Register VLM backends (:class:`ecap.vlm.VLMBackend`), usable as ``backend:`` by any plugin
    that runs a VLM through :func:`ecap.vlm.make_backend`. ``register(name, "module:Class")``
    keeps the backend's module (and its heavy imports) unloaded until a spec uses it; the class
    itself is accepted too."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands or groups to the ``ecap`` command line."""


@hookspec
def register_report_sections(register: Register) -> None:
    """Register sections of ``ecap report`` (:class:`ecap.report.ReportSection`): tables computed
    from the store through :mod:`ecap.report`'s query API. ``register(name, "module:Class")`` keeps
    the section's module unloaded until a report is built; the class itself is accepted too."""
