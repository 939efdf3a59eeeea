"""Built-in ``csv`` source: image pairs listed in a CSV or JSONL file."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .source import CsvSource


@hookimpl
def register_sources(register: Register) -> None:
    register("csv", CsvSource)
