"""Import pairs from CSV or JSONL.

Columns (JSONL keys): ``source`` and ``target`` (image paths relative to the file, absolute paths,
or http(s)/file URLs), and optionally ``instruction``, ``category``, and the reference fields
``primary``, ``secondary`` (JSON lists, or ``;``-separated in CSV) and ``overall``. Any other column
is kept in the pair's ``meta``.

Every image is read, hashed and decoded on import. A row whose image is missing, corrupt or too
large fails alone, with the reason; the other rows import.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ecap.errors import EcapError
from ecap.hashing import digest
from ecap.images import URL_SCHEMES, ImageReadError, read_bytes
from ecap.interfaces import PluginConfig, Source, SourceRow, transport_field
from ecap.records import ImageRef, Instruction, Item, Pair, Reference, SampleError

KNOWN_COLUMNS = {"source", "target", "instruction", "category", "primary", "secondary", "overall"}


class CsvSourceConfig(PluginConfig):
    path: str = Field(description="CSV or JSONL file, relative to the spec")
    format: Literal["auto", "csv", "jsonl"] = Field("auto", description="auto: by file extension")
    images_root: str | None = Field(
        None, description="folder that relative image paths start from (default: the file's)"
    )
    instruction_origin: Literal["reference", "human", "model"] = Field(
        "reference", description="origin recorded for instructions found in the file"
    )
    instruction_author: str | None = Field(
        None,
        description="who wrote the file's instructions, e.g. the model id that reports group "
        "by (default: the file's name)",
    )
    max_image_pixels: int = Field(64_000_000, ge=1, description="larger images fail their row")
    url_timeout: float = transport_field(30.0, description="seconds per image download")


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow")

    source: str
    target: str
    instruction: str | None = None
    category: str | None = None
    primary: list[str] = Field(default_factory=list)
    secondary: list[str] = Field(default_factory=list)
    overall: str | None = None

    @field_validator("primary", "secondary", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if value is None or value == "":
            return []
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(";") if part.strip()]
        return value

    @field_validator("instruction", "category", "overall", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class CsvSource(Source):
    Config = CsvSourceConfig
    config: CsvSourceConfig

    @property
    def file(self) -> Path:
        return (self.context.base_dir / self.config.path).resolve()

    @property
    def images_root(self) -> Path:
        root = self.config.images_root
        return (self.context.base_dir / root).resolve() if root else self.file.parent

    def check(self) -> list[str]:
        if not self.file.is_file():
            return [f"path: no file {self.file}"]
        return []

    def rows(self) -> Iterator[SourceRow]:
        """Rows keyed by their content and their images' size and mtime: editing a row, or
        replacing an image file, re-imports that row; appending rows imports only the new ones."""
        for number, data in self._read():
            key = digest("csv-row", data, [self._stat(data.get(c)) for c in ("source", "target")])
            yield SourceRow(key=key, data={"row": number, **data})

    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        return [self._load_row(row) for row in batch]

    def _read(self) -> Iterator[tuple[int, dict[str, Any]]]:
        fmt = self.config.format
        if fmt == "auto":
            fmt = "jsonl" if self.file.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"
        try:
            text = self.file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise EcapError(f"csv source: cannot read {self.file}: {exc.strerror}") from exc
        if fmt == "csv":
            reader = csv.DictReader(io.StringIO(text))
            for data in reader:
                yield reader.line_num, {k: v for k, v in data.items() if k is not None}
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                data = {"_error": f"invalid JSON: {exc.msg}"}
            yield number, data if isinstance(data, dict) else {"_error": "not a JSON object"}

    def _stat(self, location: Any) -> list[int] | None:
        if not isinstance(location, str) or "://" in location:
            return None
        try:
            st = os.stat(self.images_root / location)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def _load_row(self, source_row: SourceRow) -> list[Item] | SampleError:
        number = source_row.data["row"]
        where = f"{self.file.name}:{number}"
        if "_error" in source_row.data:
            return SampleError(
                error_type="RowError", message=f"{where}: {source_row.data['_error']}"
            )
        try:
            row = _Row.model_validate({k: v for k, v in source_row.data.items() if k != "row"})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            return SampleError(error_type="RowError", message=f"{where}: {problems}")
        try:
            source, target = self._image(row.source), self._image(row.target)
        except ImageError as exc:
            return SampleError(error_type="ImageError", message=f"{where}: {exc}")
        extra = {k: v for k, v in (row.model_extra or {}).items() if k not in KNOWN_COLUMNS}
        pair = Pair.of(
            source,
            target,
            category=row.category,
            meta={"source_file": str(self.file), "row": number, **extra},
        )
        item: dict[str, Any] = {"pair": pair}
        if row.instruction:
            item["instruction"] = Instruction(
                pair_id=pair.id,
                text=row.instruction,
                origin=self.config.instruction_origin,
                author=self.config.instruction_author or self.file.name,
            )
        if row.primary or row.secondary or row.overall:
            item["reference"] = Reference(
                pair_id=pair.id,
                primary=row.primary,
                secondary=row.secondary,
                overall=row.overall or "",
            )
        return [Item(**item)]

    def _image(self, location: str) -> ImageRef:
        data, uri = self._fetch(location)
        return inspect_image(data, uri, self.config.max_image_pixels)

    def _fetch(self, location: str) -> tuple[bytes, str]:
        uri = (
            location
            if location.startswith(URL_SCHEMES)
            else str((self.images_root / location).resolve())
        )
        try:
            return read_bytes(uri, self.config.url_timeout), uri
        except ImageReadError as exc:
            raise ImageError(str(exc).replace(uri, location)) from exc


class ImageError(Exception):
    """An image that cannot be used."""


def inspect_image(data: bytes, uri: str, max_pixels: int) -> ImageRef:
    """Hash the bytes and decode the image fully, so that corrupt files fail here, not later."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
            if width * height > max_pixels:
                raise ImageError(f"{uri}: {width}x{height} is over max_image_pixels={max_pixels}")
            image.load()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ImageError(f"{uri}: not a readable image ({exc})") from exc
    return ImageRef(
        uri=uri, sha256=hashlib.sha256(data).hexdigest(), width=width, height=height, format=fmt
    )
