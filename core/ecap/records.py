"""The records ecap produces and stores: the project's vocabulary as pydantic models.

Records cross every boundary (plugin <-> runner <-> store <-> exporters), so they are plain data
with
no behaviour beyond naming their own lineage. Ids are sortable ULIDs, except a pair's, which is the
hash of both images' bytes so that importing the same pair twice yields one pair.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID

#: Records are built on first use, not at import (``defer_build``): building their validators took
#: a third of the time reading commands such as ``ecap runs list`` spent importing the store, which
#: never validates a record.
LAZY = ConfigDict(defer_build=True)
#: The configuration of every record model: plain, immutable data.
FROZEN = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def new_id() -> str:
    """A fresh ULID: unique, and sortable by creation time."""
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Lineage(BaseModel):
    """One W3C PROV edge from a record to what it came from."""

    model_config = LAZY

    verb: Literal["used", "wasGeneratedBy", "wasDerivedFrom", "wasAttributedTo"]
    target_type: str
    target_id: str


class Record(BaseModel):
    """Base of every stored record. ``record_type`` names its table and its lineage type."""

    model_config = FROZEN
    record_type: ClassVar[str]

    id: str = Field(default_factory=new_id)
    meta: dict[str, Any] = Field(default_factory=dict)

    def lineage(self) -> list[Lineage]:
        """Edges to the records this one was made from, derived from its own fields."""
        return []


class ImageRef(BaseModel):
    """An image on disk or object storage, referenced by its bytes' hash, never stored inline."""

    model_config = FROZEN

    uri: str
    sha256: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    #: The bytes with this sha256 are known to decode in full, without error, into pixels no
    #: EXIF orientation turns: set by a source that decoded them at import (``csv``) or encoded
    #: them itself (``shapes``). Model-side preparation (``ecap.images``) then checks the sha256
    #: and the header but does not decode the same bytes again. Never set it on a guess.
    decodes_upright: bool = False


def pair_id(source_sha256: str, target_sha256: str) -> str:
    """A pair's identity: the hash of both images' hashes, in order (source first)."""
    return hashlib.sha256(f"{source_sha256}:{target_sha256}".encode()).hexdigest()


class Pair(Record):
    """(source image, target image)."""

    record_type: ClassVar[str] = "pair"

    source: ImageRef
    target: ImageRef
    category: str | None = None

    @classmethod
    def of(cls, source: ImageRef, target: ImageRef, **fields: Any) -> Pair:
        return cls(id=pair_id(source.sha256, target.sha256), source=source, target=target, **fields)


class Instruction(Record):
    """Editing instruction text for a pair; ``parent_id`` is the instruction it corrects."""

    record_type: ClassVar[str] = "instruction"

    pair_id: str
    text: str
    origin: Literal["model", "human", "reference"]
    parent_id: str | None = None
    author: str | None = None  # model id@revision, annotator, or dataset name
    candidate: int = 0

    def lineage(self) -> list[Lineage]:
        edges = [Lineage(verb="wasDerivedFrom", target_type="pair", target_id=self.pair_id)]
        if self.parent_id:
            edges.append(
                Lineage(verb="wasDerivedFrom", target_type="instruction", target_id=self.parent_id)
            )
        return edges


class Reference(Record):
    """Structured ground truth for a pair, in the paper's format."""

    record_type: ClassVar[str] = "reference"

    pair_id: str
    primary: list[str] = Field(default_factory=list)
    secondary: list[str] = Field(default_factory=list)
    overall: str = ""

    def lineage(self) -> list[Lineage]:
        return [Lineage(verb="wasDerivedFrom", target_type="pair", target_id=self.pair_id)]


class Score(Record):
    """A reward model's or heuristic's number(s) for (pair, instruction)."""

    record_type: ClassVar[str] = "score"

    pair_id: str
    instruction_id: str | None = None
    scorer: str
    values: dict[str, float]

    def lineage(self) -> list[Lineage]:
        return [_used_subject(self.pair_id, self.instruction_id)]


class Verdict(Record):
    """A judge's (or a human's) per-axis scores, reasons, defect labels and weighted S."""

    record_type: ClassVar[str] = "verdict"

    pair_id: str
    instruction_id: str | None = None
    reference_id: str | None = None
    judge: str
    kind: Literal["model", "human"] = "model"
    axes: dict[str, float] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    weighted: float | None = None

    def lineage(self) -> list[Lineage]:
        edges = [_used_subject(self.pair_id, self.instruction_id)]
        if self.reference_id:
            edges.append(Lineage(verb="used", target_type="reference", target_id=self.reference_id))
        return edges


class Preference(Record):
    """(pair, chosen, rejected): one DPO example."""

    record_type: ClassVar[str] = "preference"

    pair_id: str
    chosen_id: str
    rejected_id: str

    def lineage(self) -> list[Lineage]:
        return [
            Lineage(verb="used", target_type="instruction", target_id=self.chosen_id),
            Lineage(verb="used", target_type="instruction", target_id=self.rejected_id),
        ]


class Dataset(Record):
    """A frozen, content-hashed selection used to train or evaluate."""

    record_type: ClassVar[str] = "dataset"

    name: str
    content_hash: str
    format: str
    uri: str | None = None
    count: int


class Model(Record):
    """A checkpoint with its lineage: base model and the datasets it was trained on."""

    record_type: ClassVar[str] = "model"

    name: str
    uri: str
    revision: str | None = None
    #: The stored model this one was fine-tuned from (an earlier train step's), if any.
    base_model_id: str | None = None
    #: The dataset it was trained on (set by the runner when the trainer leaves it empty).
    dataset_id: str | None = None

    def lineage(self) -> list[Lineage]:
        edges = []
        if self.base_model_id:
            edges.append(
                Lineage(verb="wasDerivedFrom", target_type="model", target_id=self.base_model_id)
            )
        if self.dataset_id:
            edges.append(Lineage(verb="used", target_type="dataset", target_id=self.dataset_id))
        return edges


def _used_subject(pair_id: str, instruction_id: str | None) -> Lineage:
    if instruction_id:
        return Lineage(verb="used", target_type="instruction", target_id=instruction_id)
    return Lineage(verb="used", target_type="pair", target_id=pair_id)


RECORD_TYPES: dict[str, type[Record]] = {
    cls.record_type: cls
    for cls in (Pair, Instruction, Reference, Score, Verdict, Preference, Dataset, Model)
}


class Item(BaseModel):
    """What flows along a ``from:`` edge: a pair and whatever records accompany it so far.

    A captioner adds an instruction, a filter a score, a judge a verdict; each step passes the rest
    through, so a judge downstream of a captioner still sees the source's reference.
    """

    model_config = FROZEN

    pair: Pair
    instruction: Instruction | None = None
    reference: Reference | None = None
    score: Score | None = None
    verdict: Verdict | None = None
    preference: Preference | None = None

    #: The record slots, in field order: the order of :meth:`refs` and so of every cache key.
    SLOTS: ClassVar[tuple[str, ...]]

    def records(self) -> list[Record]:
        return [r for slot in self.SLOTS if (r := getattr(self, slot)) is not None]

    def refs(self) -> dict[str, str]:
        """Slot -> record id; how the store remembers an item."""
        return {slot: r.id for slot in self.SLOTS if (r := getattr(self, slot)) is not None}

    def key(self) -> str:
        """The item's identity as an input: the ids of the records it carries."""
        return "|".join(f"{slot}={rid}" for slot, rid in self.refs().items())

    def leaf(self) -> Record:
        """The most derived record the item carries: what a dataset built from it used."""
        for slot in ("verdict", "preference", "score", "instruction", "reference"):
            if (r := getattr(self, slot)) is not None:
                return r
        return self.pair


Item.SLOTS = tuple(Item.model_fields)


class SampleError(BaseModel):
    """One sample failed inside a plugin. Recorded and shown; never fails the step on its own."""

    model_config = FROZEN

    error_type: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> SampleError:
        return cls(error_type=type(exc).__name__, message=str(exc) or repr(exc))
