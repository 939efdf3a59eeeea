"""``sft`` and ``dpo`` exporters: the rows the trainers build, written for TRL to read elsewhere.

A dataset frozen from the store can leave ecap and be trained on by any TRL script: SFT rows are
``messages`` (the trainers' user turn, then the instruction as the assistant's answer), DPO rows
are ``prompt`` / ``chosen`` / ``rejected``, both with an ``images`` column holding the pair's
(source, target). The conversation, the split and the checks on the answers are
:mod:`ecap_trl.rows`'s, so an exported row asks exactly what ``train: sft`` or ``train: dpo``
asks. Every other field is a column of its own (ids, category, failure labels), never a JSON
string, so a reader filters on them without parsing.

Images are referenced by a path relative to where the data lives (portable when the images travel
with it), by an absolute path, or embedded as encoded bytes in the Hugging Face ``Image`` layout
(``{bytes, path}``) that ``datasets`` decodes to PIL images on load.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ecap.datasets import split_of
from ecap.errors import EcapError
from ecap.images import URL_SCHEMES
from ecap.interfaces import Exporter, ExportResult, PluginConfig, require
from ecap.records import Item, Preference

from .config import TrainerConfig
from .rows import (
    Row,
    answer,
    preference_texts,
    prepared_pair,
    sft_answer,
    user_turn,
)

FileFormat = Literal["jsonl", "parquet", "hf"]
#: Output suffix -> file format, for a config that does not name one.
SUFFIX_FORMATS: dict[str, FileFormat] = {".jsonl": "jsonl", ".parquet": "parquet", "": "hf"}
#: Preference.meta keys that say why the rejected instruction failed (a judge's or an
#: annotator's defect labels and score), exported as columns when any row has them.
FAILURE_FIELDS = ("rejected_labels", "rejected_score")
#: How ``datasets`` reads a column of encoded images: a list of {bytes, path} structs, with this
#: feature declared in the Parquet schema's ``huggingface`` metadata.
HF_IMAGES_FEATURE = {"images": [{"_type": "Image"}]}


def _as_trainers(field: str) -> Any:
    """The trainers' own definition of ``field`` (default, bounds, description), so an exported
    row asks what training asks unless the config says otherwise."""
    return TrainerConfig.model_fields[field]


class TrlExportConfig(PluginConfig):
    """Where and how to write the rows, and the question they ask (the trainers' by default)."""

    path: str = Field(
        description="output file (.jsonl, .parquet) or folder (hf), relative to the spec"
    )
    format: FileFormat | None = Field(
        None, description="jsonl, parquet or hf; unset: from the path's suffix (none: hf)"
    )
    images: Literal["relative", "absolute", "bytes"] = Field(
        "relative",
        description="relative: paths from the output's folder (the dataset folder for hf); "
        "absolute: full paths; bytes: the encoded images embedded (parquet and hf only)",
    )
    prompt: str = _as_trainers("prompt")
    system: str | None = _as_trainers("system")
    source_label: str | None = _as_trainers("source_label")
    target_label: str | None = _as_trainers("target_label")
    validation_fraction: float = _as_trainers("validation_fraction")
    test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="pairs marked test in the split column, chosen by pair id hash (pairs "
        "whose source declared them test are marked test whatever this is)",
    )

    @property
    def file_format(self) -> FileFormat:
        if self.format is not None:
            return self.format
        return SUFFIX_FORMATS[Path(self.path).suffix.lower()]

    @model_validator(mode="after")
    def _format_known_and_able_to_hold_the_images(self) -> TrlExportConfig:
        suffix = Path(self.path).suffix.lower()
        if self.format is None and suffix not in SUFFIX_FORMATS:
            raise ValueError(
                f"format: cannot tell it from the suffix {suffix!r} of path; name one of "
                "jsonl, parquet, hf (or end the path in .jsonl, .parquet, or no suffix for hf)"
            )
        if self.images == "bytes" and self.file_format == "jsonl":
            raise ValueError(
                "images: bytes needs format parquet or hf (JSON has no bytes); use relative "
                "or absolute paths for jsonl"
            )
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "validation_fraction + test_fraction must stay below 1 (some pairs train)"
            )
        return self


class _TrlExporter(Exporter):
    """Rows built by :meth:`rows`, then written in the configured file format."""

    Config = TrlExportConfig
    config: TrlExportConfig
    #: ``sft`` or ``dpo``: what ExportResult.format records.
    layout: str

    def export(self, items: Sequence[Item], content_hash: str) -> ExportResult:
        if not items:
            raise EcapError(f"{self.layout} export: the step has no items to export")
        target = (self.context.base_dir / self.config.path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        fmt = self.config.file_format
        images_root = target if fmt == "hf" else target.parent
        rows = self.rows(items)  # every answer is checked before any image is read
        for item, row in zip(items, rows, strict=True):
            row["split"] = split_of(
                item.pair, self.config.validation_fraction, self.config.test_fraction
            )
        images = (self._images(item, images_root) for item in items)  # read as written
        WRITERS[fmt](rows, images, target, embedded=self.config.images == "bytes")
        return ExportResult(uri=str(target), format=f"{self.layout}-{fmt}")

    @abstractmethod
    def rows(self, items: Sequence[Item]) -> list[Row]:
        """One row per item, without its ``split`` and ``images`` (the same for both layouts)."""

    def _images(self, item: Item, root: Path) -> list[Any]:
        """The pair's (source, target) as the configured reference. Every image is read and
        checked against its import hash first, so a moved or changed file fails here, naming
        the pair, and not in someone's training run."""
        prepared = prepared_pair(item, max_pixels=None)
        if self.config.images == "bytes":
            return [{"bytes": image.data, "path": None} for image in prepared]
        return [self._path(ref.uri, root) for ref in (item.pair.source, item.pair.target)]

    def _path(self, uri: str, root: Path) -> str:
        local = _local_path(uri)
        if local is None:  # an http(s) URL is as portable as it gets
            return uri
        if self.config.images == "absolute":
            return str(local)
        return Path(os.path.relpath(local, root)).as_posix()


class SftExporter(_TrlExporter):
    """One ``messages`` row per (pair, instruction), as ``train: sft`` trains on."""

    layout = "sft"

    def rows(self, items: Sequence[Item]) -> list[Row]:
        rows = []
        for item in items:
            text = sft_answer(item)
            assert item.instruction is not None
            rows.append(
                {
                    "messages": user_turn(self.config) + answer(text),
                    "pair_id": item.pair.id,
                    "category": item.pair.category,
                    "instruction_id": item.instruction.id,
                    "origin": item.instruction.origin,
                }
            )
        return rows


class DpoExporter(_TrlExporter):
    """One ``prompt``/``chosen``/``rejected`` row per preference, as ``train: dpo`` trains on;
    the instruction texts are read from the store (``PluginContext.records``)."""

    layout = "dpo"

    def rows(self, items: Sequence[Item]) -> list[Row]:
        texts = preference_texts(items, self.context.records)
        failures = [f for f in FAILURE_FIELDS if any(f in _preference(i).meta for i in items)]
        rows = []
        for item, (chosen, rejected) in zip(items, texts, strict=True):
            preference = _preference(item)
            rows.append(
                {
                    "prompt": user_turn(self.config),
                    "chosen": answer(chosen),
                    "rejected": answer(rejected),
                    "pair_id": item.pair.id,
                    "category": item.pair.category,
                    "chosen_id": preference.chosen_id,
                    "rejected_id": preference.rejected_id,
                    **{field: preference.meta.get(field) for field in failures},
                }
            )
        return rows


def _preference(item: Item) -> Preference:
    assert item.preference is not None  # preference_texts refused items without one
    return item.preference


def _local_path(uri: str) -> Path | None:
    """The file a local image reference names, or ``None`` for a remote URL."""
    if uri.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path))
    if uri.startswith(URL_SCHEMES):
        return None
    return Path(uri).resolve()


#: Pairs per Parquet row group: with embedded images, the memory an export holds at once.
PARQUET_BATCH_ROWS = 256


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target``, moved over it only once complete: readers never see
    half a file, and an export that fails part-way leaves nothing behind."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_jsonl(
    rows: list[Row], images: Iterator[list[Any]], target: Path, *, embedded: bool
) -> None:
    with _replacing(target) as tmp, tmp.open("w", encoding="utf-8") as out:
        for row, pictures in zip(rows, images, strict=True):
            out.write(json.dumps({**row, "images": pictures}, ensure_ascii=False) + "\n")


def _write_parquet(
    rows: list[Row], images: Iterator[list[Any]], target: Path, *, embedded: bool
) -> None:
    """Written a row group at a time: the text columns' schema comes from every row (so a
    column empty in the first rows still gets its type), the images are read per group."""
    import pyarrow as pa  # a core dependency, but not one `ecap --help` should pay for
    import pyarrow.parquet as pq

    columns = pa.Table.from_pylist(rows)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if embedded else pa.string()
    images_field = pa.field("images", pa.list_(image))
    schema = columns.schema.append(images_field)
    if embedded:
        schema = schema.with_metadata(
            {"huggingface": json.dumps({"info": {"features": HF_IMAGES_FEATURE}})}
        )
    with _replacing(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(rows), PARQUET_BATCH_ROWS):
            group = columns.slice(start, PARQUET_BATCH_ROWS)
            pictures = [next(images) for _ in range(group.num_rows)]
            writer.write_table(
                group.append_column(images_field, pa.array(pictures, images_field.type))
            )


def _write_hf(
    rows: list[Row], images: Iterator[list[Any]], target: Path, *, embedded: bool
) -> None:
    """Built in memory (``datasets`` has no streaming writer that stays out of its cache)."""
    datasets = require("datasets", "train", "sft/dpo export")
    dataset = datasets.Dataset.from_list(
        [{**row, "images": pictures} for row, pictures in zip(rows, images, strict=True)]
    )
    if embedded:
        dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image()))
    dataset.save_to_disk(str(target))


WRITERS = {"jsonl": _write_jsonl, "parquet": _write_parquet, "hf": _write_hf}
