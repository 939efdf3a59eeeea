"""Import pairs from CSV or JSONL.

Columns (JSONL keys): ``source`` and ``target`` (image paths relative to the file, absolute paths,
or http(s)/file URLs), and optionally ``instruction``, ``category``, and the reference fields
``primary``, ``secondary`` (JSON lists, or ``;``-separated in CSV) and ``overall``. Any other column
is kept in the pair's ``meta``.

Every image is read, hashed and decoded on import. A row whose image is missing, corrupt, too
large, not a regular file or outside ``images_root`` fails alone, with the reason; so does a line
that is not valid in the file's ``encoding`` (with its line number and byte offset) or longer than
``max_row_bytes``. The other rows import. The file is read line by line, never whole.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ecap.errors import EcapError
from ecap.hashing import digest
from ecap.images import (
    MAX_IMAGE_BYTES,
    MAX_REDIRECTS,
    ORIENTATION,
    PARALLEL_IMAGE_BYTES,
    URL_SCHEMES,
    ImageReadError,
    across_cores,
    read_bytes,
)
from ecap.interfaces import PluginConfig, Source, SourceRow, transport_field
from ecap.records import ImageRef, Instruction, Item, Pair, Reference, SampleError

KNOWN_COLUMNS = {"source", "target", "instruction", "category", "primary", "secondary", "overall"}


class CsvSourceConfig(PluginConfig):
    path: str = Field(description="CSV or JSONL file, relative to the spec")
    format: Literal["auto", "csv", "jsonl"] = Field("auto", description="auto: by file extension")
    encoding: str = Field(
        "utf-8-sig", description="the file's text encoding (any that keeps ASCII as it is)"
    )
    images_root: str | None = Field(
        None,
        description="folder that relative image paths start from (default: the file's); when "
        "set, every image must be inside it: absolute paths, '..' and links out are refused",
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
    max_image_bytes: int = Field(MAX_IMAGE_BYTES, ge=1, description="larger files fail their row")
    max_row_bytes: int = Field(1 << 20, ge=1, description="longer lines fail their row")
    url_timeout: float = transport_field(
        30.0, gt=0, description="seconds per image download, in all (not per read)"
    )
    max_redirects: int = transport_field(
        MAX_REDIRECTS, ge=0, description="redirects an image download may follow"
    )

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if '\n,"'.encode(value, errors="replace") != b'\n,"':
            raise ValueError(
                f"{value!r} does not keep ASCII as it is (use utf-8, latin-1, cp1252...)"
            )
        return value


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
    """Pairs from a CSV or JSONL file: source and target image paths, optional category,
    instruction and reference columns; each image read, checked and hashed."""

    Config = CsvSourceConfig
    config: CsvSourceConfig

    @functools.cached_property
    def file(self) -> Path:
        """The file, resolved once per step (resolving walks every link of the path)."""
        return (self.context.base_dir / self.config.path).resolve()

    @functools.cached_property
    def images_root(self) -> Path:
        root = self.config.images_root
        return (self.context.base_dir / root).resolve() if root else self.file.parent

    @functools.cached_property
    def _images_prefix(self) -> str:
        """``images_root`` as a string ending in a separator, to join image paths cheaply."""
        return os.path.join(self.images_root, "")

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

    def _read(self) -> Iterator[tuple[int, dict[str, Any]]]:
        fmt = self.config.format
        if fmt == "auto":
            fmt = "jsonl" if self.file.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"
        if self.file.exists() and not self.file.is_file():  # a FIFO would block, a device not end
            raise EcapError(f"csv source: {self.file} is not a regular file")
        try:
            with self.file.open("rb") as raw:
                lines = _lines(raw, self.config.encoding, self.config.max_row_bytes)
                yield from (self._csv_rows(lines) if fmt == "csv" else _jsonl_rows(lines))
        except OSError as exc:
            raise EcapError(f"csv source: cannot read {self.file}: {exc.strerror}") from exc

    def _csv_rows(self, lines: Iterator[_Line]) -> Iterator[tuple[int, dict[str, Any]]]:
        """CSV records with the number of their first line; a record with a bad line (or one
        the csv module refuses) becomes an error row, and reading goes on after it."""
        problems: dict[int, str] = {}

        def texts() -> Iterator[str]:
            for line in lines:
                if line.problem:
                    problems[line.number] = line.problem
                yield line.text

        reader = csv.reader(texts())
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise EcapError(f"csv source: {self.file}: header: {exc}") from exc
        if bad := [problems[n] for n in range(1, reader.line_num + 1) if n in problems]:
            raise EcapError(f"csv source: {self.file}: header: {bad[0]}")
        if not header:
            return
        unset = dict.fromkeys(header)  # every field, None until a record gives it
        first = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield first, {"_error": f"not a CSV record: {exc}"}
                first = reader.line_num + 1
                continue
            bad = [problems.pop(n) for n in range(first, reader.line_num + 1) if n in problems]
            if bad:
                yield first, {"_error": bad[0]}
            elif values:  # a blank line is no record
                data = dict(unset)
                data.update(zip(header, values, strict=False))  # fields past the header dropped
                yield first, data
            first = reader.line_num + 1

    def _stat(self, location: Any) -> list[int] | None:
        if not isinstance(location, str) or "://" in location:
            return None
        try:  # an absolute location replaces the root, as Path's / would
            st = os.stat(location if os.path.isabs(location) else self._images_prefix + location)
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
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
        uri = self._uri(location)
        try:
            data = read_bytes(
                uri,
                self.config.url_timeout,
                max_bytes=self.config.max_image_bytes,
                max_redirects=self.config.max_redirects,
            )
        except ImageReadError as exc:
            raise ImageError(str(exc).replace(uri, location)) from exc
        return data, uri

    def _uri(self, location: str) -> str:
        """Where to read ``location`` from; with ``images_root`` set, only paths inside it."""
        if self.config.images_root is None:
            if location.startswith(URL_SCHEMES):
                return location
            return self._resolve(os.path.join(self.images_root, location))
        if location.startswith(("http://", "https://")):
            return location
        path = Path(location)
        if location.startswith("file://"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(location).path))
        if path.is_absolute():
            raise ImageError(f"{location}: an absolute path, refused with images_root set")
        if ".." in path.parts:
            raise ImageError(f"{location}: '..' is refused with images_root set")
        root = self.images_root
        resolved = Path(self._resolve(os.path.join(root, path)))
        if not resolved.is_relative_to(root):
            raise ImageError(f"{location}: a link that leads out of images_root {root}")
        return str(resolved)

    def _resolve(self, path: str) -> str:
        """``os.path.realpath(path)`` (what ``Path.resolve`` does), with its folder's resolution
        computed once for all the images in it (resolving looks up every component of a path);
        a file that is itself a link, or a name like ``..``, is resolved in full."""
        folder, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        resolved = self._resolved_folders.get(folder)
        if resolved is None:
            resolved = self._resolved_folders[folder] = os.path.realpath(folder)
        return os.path.join(resolved, name)

    @functools.cached_property
    def _resolved_folders(self) -> dict[str, str]:
        return {}

    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        if self._worth_threads(batch):
            return across_cores(self._load_row, batch)
        return [self._load_row(row) for row in batch]

    def _worth_threads(self, batch: Sequence[SourceRow]) -> bool:
        """Whether the batch's rows load faster split across cores: when they download images
        (threads wait on the network together), or when its files are large enough on average
        that decoding and hashing, which release the GIL, outweigh the Python around them.
        Tiny images (thumbnails, tests) load faster on one thread: two threads would spend
        their time handing the GIL to each other."""
        sizes = []
        for row in batch:
            for column in ("source", "target"):
                location = row.data.get(column)
                if not isinstance(location, str):
                    continue
                if location.startswith(("http://", "https://")):
                    return True
                if (stat := self._stat(location)) is not None:
                    sizes.append(stat[0])
        return bool(sizes) and sum(sizes) / len(sizes) >= PARALLEL_IMAGE_BYTES


class ImageError(Exception):
    """An image that cannot be used."""


def inspect_image(data: bytes, uri: str, max_pixels: int) -> ImageRef:
    """Hash the bytes and decode the image fully, so that corrupt files fail here, not later;
    the reference records that they decode (and whether upright), so that models' image
    preparation need not decode them again."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
            if width * height > max_pixels:
                raise ImageError(f"{uri}: {width}x{height} is over max_image_pixels={max_pixels}")
            image.load()
            upright = image.getexif().get(ORIENTATION, 1) in (1, None)  # read after the pixels
    except ImageError:
        raise
    except Exception as exc:  # a decoder fed hostile bytes may raise anything: the file's fault
        raise ImageError(f"{uri}: not a readable image ({exc})") from exc
    return ImageRef(
        uri=uri,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        format=fmt,
        decodes_upright=upright,
    )


#: An encoding whose mark, if any, opens the file only -> how the lines after the first decode
#: (the same, without a mark to strip; and Python's plain UTF-8 codec is several times faster).
_WITHOUT_BOM = {"utf-8-sig": "utf-8"}


@dataclass
class _Line:
    """One line of the file: its number, its text, and what is wrong with it (if anything)."""

    number: int
    text: str
    problem: str | None = None


def _lines(raw: io.BufferedIOBase, encoding: str, max_bytes: int) -> Iterator[_Line]:
    """The file's lines, decoded one at a time: a byte that is not valid in ``encoding`` spoils
    only its line (the text keeps its shape with U+FFFD in its place, so CSV records around it
    still parse), and a line over ``max_bytes`` is skipped, not held in memory."""
    offset = 0
    number = 0
    after_first = _WITHOUT_BOM.get(codecs.lookup(encoding).name, encoding)
    while data := raw.readline(max_bytes + 1):
        codec = encoding if number == 0 else after_first
        number += 1
        start, offset = offset, offset + len(data)
        if len(data) > max_bytes and not data.endswith(b"\n"):
            while (more := raw.readline(1 << 16)) and not more.endswith(b"\n"):
                offset += len(more)
            offset += len(more)
            yield _Line(number, "\n", f"line longer than max_row_bytes={max_bytes}")
            continue
        try:
            yield _Line(number, data.decode(codec))
        except UnicodeDecodeError as exc:
            yield _Line(
                number,
                data.decode(codec, errors="replace"),
                f"byte offset {start + exc.start}: byte 0x{data[exc.start]:02x} is not valid "
                f"{encoding} (set encoding: to the file's)",
            )


def _jsonl_rows(lines: Iterator[_Line]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line in lines:
        if line.problem:
            yield line.number, {"_error": line.problem}
            continue
        if not line.text.strip():
            continue
        try:
            data = json.loads(line.text)
        except json.JSONDecodeError as exc:
            data = {"_error": f"invalid JSON: {exc.msg}"}
        yield line.number, data if isinstance(data, dict) else {"_error": "not a JSON object"}
