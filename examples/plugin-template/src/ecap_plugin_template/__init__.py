"""An example ecap plugin package: the ``instruction-length`` filter, the
``template-brightness`` VLM backend, and the ``instruction_length`` section of ``ecap report``.

This module is what the entry point ``template = "ecap_plugin_template"`` names. ecap imports it
for every command (``ecap --help`` included), so it holds only the registration hook and imports
nothing heavy: the standard library, pydantic and ``ecap`` at most.
"""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .instruction_length import InstructionLengthConfig, InstructionLengthFilter

__all__ = [
    "InstructionLengthConfig",
    "InstructionLengthFilter",
    "register_filters",
    "register_report_sections",
    "register_vlm_backends",
]


@hookimpl
def register_filters(register: Register) -> None:
    """Offer the filter to specs as ``filter: instruction-length``."""
    register("instruction-length", InstructionLengthFilter)


@hookimpl
def register_vlm_backends(register: Register) -> None:
    """Offer the backend to every plugin that runs a VLM, as ``backend: template-brightness``.
    Named by ``module:Class`` so its module is imported only when a spec uses it."""
    register("template-brightness", "ecap_plugin_template.brightness_backend:BrightnessBackend")


@hookimpl
def register_report_sections(register: Register) -> None:
    """Add a table to ``ecap report``. Named by ``module:Class``: imported only for a report."""
    register("instruction_length", "ecap_plugin_template.length_report:InstructionLengthSection")
