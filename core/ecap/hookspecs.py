"""Every hook a plugin can implement. One registration hook per plugin kind, in the style of
``register_captioners(register)``: the plugin calls ``register(name, PluginClass)`` for each plugin
it offers. ``PluginClass`` lives in a module that imports nothing heavy at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ecap")
hookimpl = pluggy.HookimplMarker("ecap")

Register = Callable[[str, Any], None]


@hookspec
def register_sources(register: Register) -> None:
    """Register AnnotationSource plugins, usable as ``source:`` and ``annotate:`` steps."""


@hookspec
def register_captioners(register: Register) -> None:
    """Register Captioner plugins, usable as ``caption:`` steps."""


@hookspec
def register_filters(register: Register) -> None:
    """Register Filter plugins, usable as ``filter:`` steps."""


@hookspec
def register_trainers(register: Register) -> None:
    """Register Trainer plugins, usable as ``train:`` steps."""


@hookspec
def register_judges(register: Register) -> None:
    """Register Judge plugins, usable as ``judge:`` steps."""


@hookspec
def register_exporters(register: Register) -> None:
    """Register Exporter plugins, usable as ``export:`` steps and by ``ecap export``."""


@hookspec
def register_vlm_backends(register: Register) -> None:
    """Register VLM backends (:class:`ecap.vlm.VLMBackend`), usable as ``backend:`` by any plugin
    that runs a VLM through :func:`ecap.vlm.make_backend`. ``register(name, "module:Class")``
    keeps the backend's module (and its heavy imports) unloaded until a spec uses it; the class
    itself is accepted too."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands or groups to the ``ecap`` command line."""


#: Registry kind -> name of the hook that fills it.
KIND_HOOKS: dict[str, str] = {
    "source": "register_sources",
    "caption": "register_captioners",
    "filter": "register_filters",
    "train": "register_trainers",
    "judge": "register_judges",
    "export": "register_exporters",
}
