"""Built-in exporters: ``jsonl``, ``parquet`` and ``hf`` (a Hugging Face ``datasets`` folder)."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .writers import HfExporter, JsonlExporter, ParquetExporter


@hookimpl
def register_exporters(register: Register) -> None:
    register("jsonl", JsonlExporter)
    register("parquet", ParquetExporter)
    register("hf", HfExporter)
