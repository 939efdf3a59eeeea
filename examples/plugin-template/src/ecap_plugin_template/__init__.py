"""An example ecap plugin package: the ``instruction-length`` filter.

This module is what the entry point ``template = "ecap_plugin_template"`` names. ecap imports it
for every command (``ecap --help`` included), so it holds only the registration hook and imports
nothing heavy: the standard library, pydantic and ``ecap`` at most.
"""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .instruction_length import InstructionLengthConfig, InstructionLengthFilter

__all__ = ["InstructionLengthConfig", "InstructionLengthFilter", "register_filters"]


@hookimpl
def register_filters(register: Register) -> None:
    """Offer the filter to specs as ``filter: instruction-length``."""
    register("instruction-length", InstructionLengthFilter)
