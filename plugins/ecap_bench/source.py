"""Benchmark importers: public image-editing sets, from local copies in their published layouts.

Nothing is downloaded: ``path`` is a Parquet file, a folder of Parquet shards (a hub dataset as
``huggingface-cli download`` leaves it) or a JSON Lines file with the same columns. Image columns
may hold the hub's ``{"bytes", "path"}`` struct, raw bytes, or a path (relative to
``images_root``, default the data's folder). Embedded bytes are written once, content-addressed,
under ``images_dir``.

Every pair records its benchmark (``pair.meta["benchmark"]``) so that reports group by it, its
split (``pair.meta["split"]``: ``test`` unless configured, and no train step may use a test pair)
and its category where the set has one; the set's instruction is imported with origin
``reference``. A row holding structured ground truth in the paper's format (``primary``,
``secondary``, ``overall`` columns, e.g. a locally annotated copy) also yields a Reference.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ecap.images import ImageReadError, prepare_image
from ecap.interfaces import PluginConfig, Source, SourceRow
from ecap.records import ImageRef, Instruction, Item, Pair, Reference, SampleError

from .tables import DataFiles, RowRef, image_cell

#: ByteMorph-Bench's numbered categories (its dataset card), for sets that store the number.
BYTEMORPH_CATEGORIES = {
    0: "camera_zoom",
    1: "camera_motion",
    2: "object_motion",
    3: "human_motion",
    4: "interaction",
}


@dataclass(frozen=True)
class Layout:
    """Which columns of a benchmark hold what."""

    benchmark: str
    source: str
    target: str
    instruction: str
    category: str | None = None
    keep: tuple[str, ...] = ()  # kept in pair.meta


class BenchmarkConfig(PluginConfig):
    path: str = Field(
        description="Parquet file, folder of Parquet shards, or JSONL file (relative to the spec)"
    )
    limit: int | None = Field(None, ge=1, description="import at most this many rows")
    images_root: str | None = Field(
        None, description="folder that image paths in the data start from (default: the data's)"
    )
    images_dir: str | None = Field(
        None,
        description="where embedded images are written (default: the step's work folder, "
        "under images/)",
    )
    max_image_pixels: int = Field(64_000_000, ge=1, description="larger images fail their row")
    split: str = Field(
        "test",
        description="the split its pairs are recorded in (pair.meta['split']); benchmarks are "
        "test sets, which no train step may use, unless this says otherwise (e.g. train)",
    )


class RowError(ValueError):
    """A row that cannot be imported, with the reason."""


class BenchmarkSource(Source):
    """Base of the benchmark importers: a subclass names its :class:`Layout`."""

    layout: ClassVar[Layout]
    Config: ClassVar[type[PluginConfig]] = BenchmarkConfig
    config: BenchmarkConfig
    revision = "1"

    def __init__(self, config: BenchmarkConfig, context: Any) -> None:
        super().__init__(config, context)
        self._files: DataFiles | None = None

    @property
    def files(self) -> DataFiles:
        if self._files is None:
            self._files = DataFiles((self.context.base_dir / self.config.path).resolve())
        return self._files

    @property
    def images_root(self) -> Path:
        root = self.config.images_root
        return (self.context.base_dir / root).resolve() if root else self.files.root

    @property
    def images_dir(self) -> Path:
        if self.config.images_dir:
            return (self.context.base_dir / self.config.images_dir).resolve()
        return (self.context.work_dir / "images").resolve()

    def rows(self) -> Iterator[SourceRow]:
        for count, (key, ref) in enumerate(self.files.rows()):
            if self.config.limit is not None and count >= self.config.limit:
                return
            yield SourceRow(key=key, data={"file": ref.file, "row": ref.row})

    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        out: list[list[Item] | SampleError] = []
        for source_row in batch:
            ref = RowRef(source_row.data["file"], source_row.data["row"])
            where = f"{Path(ref.file).name}:{ref.row}"
            try:
                out.append(self.items(self.files.read(ref), where))
            except (RowError, ValueError, OSError) as exc:
                out.append(SampleError(error_type=type(exc).__name__, message=f"{where}: {exc}"))
        return out

    def items(self, row: dict[str, Any], where: str) -> list[Item]:
        """The items one row yields (one pair; some sets can yield more)."""
        layout = self.layout
        return [
            self.item(
                row,
                where,
                self.image(row, layout.source),
                self.image(row, layout.target),
                row.get(layout.instruction),
            )
        ]

    def item(
        self,
        row: dict[str, Any],
        where: str,
        source: ImageRef,
        target: ImageRef,
        text: Any,
        **extra: Any,
    ) -> Item:
        """One pair with the row's instruction, reference and kept columns (``extra`` joins
        the pair's meta)."""
        layout = self.layout
        category = self.category(row.get(layout.category)) if layout.category else None
        pair = Pair.of(
            source,
            target,
            category=category,
            meta={
                "benchmark": layout.benchmark,
                "split": self.config.split,
                "row": where,
                **{k: row[k] for k in layout.keep if row.get(k) is not None},
                **extra,
            },
        )
        fields: dict[str, Any] = {"pair": pair}
        if isinstance(text, str) and text.strip():
            fields["instruction"] = Instruction(
                pair_id=pair.id, text=text.strip(), origin="reference", author=layout.benchmark
            )
        primary, secondary = _texts(row.get("primary")), _texts(row.get("secondary"))
        overall = row.get("overall")
        if primary or secondary or (isinstance(overall, str) and overall.strip()):
            fields["reference"] = Reference(
                pair_id=pair.id,
                primary=primary,
                secondary=secondary,
                overall=overall.strip() if isinstance(overall, str) else "",
            )
        return Item(**fields)

    def category(self, value: Any) -> str | None:
        return None if value is None or value == "" else str(value)

    def image(self, row: dict[str, Any], column: str) -> ImageRef:
        """The image in ``column``, on disk and checked (hash, full decode, size limit)."""
        if column not in row:
            raise RowError(f"no column {column!r} (columns: {', '.join(sorted(row))})")
        data, path = image_cell(row[column])
        if data is not None:
            location = self._store(data)
        elif path is not None:
            if "://" in path:
                raise RowError(f"{column}: {path} is remote; importers read local files only")
            location = (self.images_root / path).resolve()
            try:
                data = location.read_bytes()
            except OSError as exc:
                raise RowError(f"{column}: cannot read {path}: {exc.strerror}") from exc
        else:
            raise RowError(f"{column} is empty")
        ref = ImageRef(uri=str(location), sha256=hashlib.sha256(data).hexdigest())
        try:
            prepare_image(ref, max_input_pixels=self.config.max_image_pixels)
        except ImageReadError as exc:
            raise RowError(f"{column}: {exc}") from exc
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            size, fmt = image.size, image.format
        return ref.model_copy(update={"width": size[0], "height": size[1], "format": fmt})

    def _store(self, data: bytes) -> Path:
        """Embedded bytes, written once under their hash."""
        path = self.images_dir / hashlib.sha256(data).hexdigest()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(path)
        return path


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


class HQEditConfig(BenchmarkConfig):
    inverse: bool = Field(
        False,
        description="also import each row's inverse pair (output -> input, with inverse_edit)",
    )


class HQEditSource(BenchmarkSource):
    """HQ-Edit (UCSC-VLAA/HQ-Edit): input_image, output_image, edit; inverse_edit, and the
    captions input/output kept in meta."""

    layout = Layout("HQ-Edit", "input_image", "output_image", "edit", keep=("input", "output"))
    Config = HQEditConfig
    config: HQEditConfig

    def items(self, row: dict[str, Any], where: str) -> list[Item]:
        forward = super().items(row, where)
        if not self.config.inverse:
            return forward
        source, target = forward[0].pair.source, forward[0].pair.target
        return [*forward, self.item(row, where, target, source, row["inverse_edit"], inverse=True)]


class ByteMorphSource(BenchmarkSource):
    """ByteMorph-Bench: src_img, tgt_img, edit_prompt, edit_type (the category)."""

    layout = Layout(
        "ByteMorph-Bench",
        "src_img",
        "tgt_img",
        "edit_prompt",
        category="edit_type",
        keep=("image_id", "edit_prompt_rewrite_instruction", "src_img_caption", "tgt_img_caption"),
    )

    def category(self, value: Any) -> str | None:
        """The card numbers its five categories; a number becomes the category's name."""
        if isinstance(value, int) and value in BYTEMORPH_CATEGORIES:
            return BYTEMORPH_CATEGORIES[value]
        return super().category(value)


class MagicBrushSource(BenchmarkSource):
    """MagicBrush (osunlp/MagicBrush): source_img, target_img, instruction; img_id and
    turn_index kept (a turn >= 2 edits the previous turn's output)."""

    layout = Layout(
        "MagicBrush", "source_img", "target_img", "instruction", keep=("img_id", "turn_index")
    )


class InstructPix2PixSource(BenchmarkSource):
    """InstructPix2Pix (timbrooks/instructpix2pix-clip-filtered): original_image, edited_image,
    edit_prompt; the captions original_prompt and edited_prompt kept."""

    layout = Layout(
        "InstructPix2Pix",
        "original_image",
        "edited_image",
        "edit_prompt",
        keep=("original_prompt", "edited_prompt"),
    )
