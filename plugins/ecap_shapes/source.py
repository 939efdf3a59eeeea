"""The ``shapes`` source: procedurally generated ShapesEdit pairs with exact references.

Pair ``i`` of a split is drawn from its own random stream, seeded by ``(seed, split, i)``, so a
pair never depends on the others (an import killed half-way resumes with identical pairs) and the
same config always yields byte-identical images and identical references. Images are written
content-addressed (``<sha256>.png``) under ``output_dir``, so two configs can share a folder
without overwriting each other's files.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ecap.interfaces import PluginConfig, Source, SourceRow
from ecap.records import ImageRef, Instruction, Item, Pair, Reference, SampleError

from .language import canonical_instruction, out_of_view, overall, reference_sentence
from .operations import FAMILIES, OPERATIONS, Example, Family, GenerationError, Knobs, compose
from .world import render

#: The author recorded on instructions the source writes from its own references.
AUTHOR = "shapes"
#: Where a reference keeps the machine-readable scene and changes.
SCENE, CHANGES, SECONDARY = "scene", "changes", "secondary_changes"


class ShapesConfig(PluginConfig):
    count: int = Field(100, ge=1, description="pairs to generate")
    seed: int = Field(0, description="same seed and split: the same pairs, byte for byte")
    split: str = Field(
        "train",
        description="name of the set (train, test, ...); it seeds the pairs too, so splits "
        "with the same seed are different pairs",
    )
    families: list[Family] = Field(
        default_factory=lambda: list(FAMILIES),
        description="semantic (add, remove, replace, background), stylistic (recolor, texture, "
        "brightness, tone), structural (move, resize, rotate, swap, zoom, pan, count)",
    )
    operations: list[str] | None = Field(
        None, description="only these operations (default: every operation of the families)"
    )
    image_size: int = Field(128, ge=32, le=2048, description="width and height in pixels")
    min_objects: int = Field(3, ge=1, le=12, description="objects per scene, at least")
    max_objects: int = Field(5, ge=1, le=12, description="objects per scene, at most")
    min_changes: int = Field(1, ge=1, le=6, description="primary changes per pair, at least")
    max_changes: int = Field(1, ge=1, le=6, description="primary changes per pair, at most")
    secondary_changes: int = Field(
        0, ge=0, le=3, description="minor changes per pair (recolor, texture or tone)"
    )
    distractor_similarity: float = Field(
        0.5,
        ge=0,
        le=1,
        description="chance that an object shares its shape or colour with another one, so "
        "that naming both attributes matters",
    )
    output_dir: str | None = Field(
        None,
        description="folder for the images, relative to the spec (default: the step's "
        "work folder, under shapes-images/)",
    )
    include_instruction: bool = Field(
        False,
        description="also emit the canonical instruction written from the reference "
        "(origin 'reference')",
    )
    benchmark: str = Field("ShapesEdit", description="pair.meta['benchmark'], for reports")

    @field_validator("operations")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(OPERATIONS))
        if unknown:
            raise ValueError(f"unknown operations {unknown}; known: {', '.join(OPERATIONS)}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> ShapesConfig:
        if self.min_objects > self.max_objects or self.min_changes > self.max_changes:
            raise ValueError("min_objects/min_changes must not exceed max_objects/max_changes")
        if not self.selected():
            raise ValueError(f"no operation of {self.families} is in {self.operations}")
        return self

    def selected(self) -> tuple[str, ...]:
        return tuple(
            op
            for op, (family, _) in OPERATIONS.items()
            if family in self.families and (self.operations is None or op in self.operations)
        )

    def knobs(self) -> Knobs:
        return Knobs(
            operations=self.selected(),
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            min_changes=self.min_changes,
            max_changes=self.max_changes,
            secondary_changes=self.secondary_changes,
            distractor_similarity=self.distractor_similarity,
        )


def pair_rng(seed: int, split: str, index: int) -> random.Random:
    """Pair ``index``'s own random stream."""
    material = hashlib.sha256(f"shapes:{seed}:{split}:{index}".encode()).digest()
    return random.Random(int.from_bytes(material[:16], "big"))


def reference_texts(example: Example) -> tuple[list[str], list[str], str]:
    """(primary, secondary, overall) in the paper's reference format."""
    primary = [reference_sentence(c) for c in example.primary]
    secondary = [reference_sentence(c) for c in example.secondary]
    secondary += [line for c in example.primary for line in out_of_view(c)]
    return primary, secondary, overall(example.source, example.primary, example.secondary)


class ShapesSource(Source):
    """Generates ShapesEdit pairs: each item carries the pair and its exact reference (and, if
    configured, the canonical instruction)."""

    Config = ShapesConfig
    config: ShapesConfig
    revision = "1"

    @property
    def folder(self) -> Path:
        if self.config.output_dir:
            return (self.context.base_dir / self.config.output_dir).resolve()
        return (self.context.work_dir / "shapes-images").resolve()

    def rows(self) -> Iterator[SourceRow]:
        for index in range(self.config.count):
            yield SourceRow(
                key=f"{self.config.split}/{self.config.seed}/{index}", data={"index": index}
            )

    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        return [self._generate(row.data["index"]) for row in batch]

    def _generate(self, index: int) -> list[Item] | SampleError:
        rng = pair_rng(self.config.seed, self.config.split, index)
        try:
            example = compose(rng, self.config.knobs())
        except GenerationError as exc:
            return SampleError(error_type="GenerationError", message=f"pair {index}: {exc}")
        source, target = self._save(example, "source"), self._save(example, "target")
        families = sorted({c.family for c in example.primary})
        pair = Pair.of(
            source,
            target,
            category=families[0] if len(families) == 1 else "mixed",
            meta={
                "benchmark": self.config.benchmark,
                "split": self.config.split,
                "seed": self.config.seed,
                "index": index,
                "operations": [c.operation for c in example.primary],
            },
        )
        primary, secondary, summary = reference_texts(example)
        reference = Reference(
            pair_id=pair.id,
            primary=primary,
            secondary=secondary,
            overall=summary,
            meta={
                SCENE: example.source.describe(),
                CHANGES: [c.describe() for c in example.primary],
                SECONDARY: [c.describe() for c in example.secondary],
            },
        )
        fields: dict[str, Any] = {"pair": pair, "reference": reference}
        if self.config.include_instruction:
            fields["instruction"] = Instruction(
                pair_id=pair.id,
                text=canonical_instruction((*example.primary, *example.secondary)),
                origin="reference",
                author=AUTHOR,
            )
        return [Item(**fields)]

    def _save(self, example: Example, side: str) -> ImageRef:
        scene = example.source if side == "source" else example.target
        buffer = io.BytesIO()
        render(scene, self.config.image_size).save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = self.folder / f"{sha}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(path)
        size = self.config.image_size
        # Pillow encoded these pixels, upright and without EXIF, a moment ago: they decode.
        return ImageRef(
            uri=str(path), sha256=sha, width=size, height=size, format="PNG", decodes_upright=True
        )
