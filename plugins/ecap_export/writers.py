"""Write items as flat rows: one row per item, with the ids that lead back to the store.

Every row carries ``pair_id`` and, when present, ``instruction_id`` (and score, verdict, reference
ids), so ``ecap provenance show <id>`` works from any exported row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from ecap.interfaces import Exporter, ExportResult, PluginConfig, require
from ecap.records import Item


class ExportConfig(PluginConfig):
    path: str = Field(
        description="output file (jsonl, parquet) or folder (hf), relative to the spec"
    )


COLUMNS = (
    "pair_id",
    "source_image",
    "target_image",
    "source_sha256",
    "target_sha256",
    "category",
    "instruction_id",
    "instruction",
    "instruction_origin",
    "instruction_author",
    "reference_id",
    "reference",
    "score_id",
    "scores",
    "verdict_id",
    "verdict",
)


def item_row(item: Item) -> dict[str, Any]:
    """One flat, JSON-friendly row per item."""
    pair = item.pair
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        pair_id=pair.id,
        source_image=pair.source.uri,
        target_image=pair.target.uri,
        source_sha256=pair.source.sha256,
        target_sha256=pair.target.sha256,
        category=pair.category,
    )
    if item.instruction:
        ins = item.instruction
        row.update(
            instruction_id=ins.id,
            instruction=ins.text,
            instruction_origin=ins.origin,
            instruction_author=ins.author,
        )
    if item.reference:
        ref = item.reference
        row.update(
            reference_id=ref.id,
            reference=json.dumps(
                {"primary": ref.primary, "secondary": ref.secondary, "overall": ref.overall}
            ),
        )
    if item.score:
        row.update(score_id=item.score.id, scores=json.dumps(item.score.values))
    if item.verdict:
        v = item.verdict
        row.update(
            verdict_id=v.id,
            verdict=json.dumps(
                {"judge": v.judge, "axes": v.axes, "weighted": v.weighted, "labels": v.labels}
            ),
        )
    return row


class _FileExporter(Exporter):
    """Writes one flat row per item (ids, image paths and hashes, the texts, scores and verdicts)
    to one file, replaced whole so that readers never see half of it."""

    Config = ExportConfig
    config: ExportConfig
    format: str

    @property
    def target(self) -> Path:
        path = (self.context.base_dir / self.config.path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def export(self, items: Sequence[Item], content_hash: str) -> ExportResult:
        target = self.target
        self.write([item_row(i) for i in items], target)
        return ExportResult(uri=str(target), format=self.format)

    def write(self, rows: list[dict[str, Any]], target: Path) -> None:
        raise NotImplementedError


class JsonlExporter(_FileExporter):
    """One JSON object per line per item: ids, images, instruction, score and verdict columns."""

    format = "jsonl"

    def write(self, rows: list[dict[str, Any]], target: Path) -> None:
        tmp = target.with_suffix(target.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(target)  # readers never see half a file


class ParquetExporter(_FileExporter):
    """The jsonl exporter's rows as a Parquet table (string columns; nested values as JSON)."""

    format = "parquet"

    def write(self, rows: list[dict[str, Any]], target: Path) -> None:
        import pyarrow as pa  # imported here: a dependency, but not one ecap --help should pay for
        import pyarrow.parquet as pq

        tmp = target.with_suffix(target.suffix + ".tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema(pa)), tmp)
        tmp.replace(target)


class HfExporter(_FileExporter):
    """The jsonl exporter's rows as a Hugging Face ``datasets`` folder (save_to_disk)."""

    format = "hf"

    def write(self, rows: list[dict[str, Any]], target: Path) -> None:
        datasets = require("datasets", "hf", "hf")
        datasets.Dataset.from_list(rows).save_to_disk(str(target))


def _arrow_schema(pa: Any) -> Any:
    """Every column is a string (nested values are JSON); explicit, so null columns keep a type."""
    return pa.schema([(name, pa.string()) for name in COLUMNS])
