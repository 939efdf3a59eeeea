"""Items turned into the rows TRL trains on, and the deterministic train/validation split.

Every row carries its two images (source, then target) in an ``images`` column and a
conversation whose user turn has the layout every ecap captioner sends: source label, source
image, target label, target image, prompt. SFT rows are conversational prompt-completion rows
(``prompt`` = the user turn, ``completion`` = the instruction), which gives a loss on the answer's
tokens only with any chat template; with ``answer_only_loss: false`` they are ``messages`` rows
(loss on the whole conversation). DPO rows are ``prompt`` / ``chosen`` / ``rejected``.

Images are read through :func:`ecap.images.prepare_image`, the path captioners use, so that
training sees the pixels sampling will see, checked against the hash recorded at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ecap.datasets import hashed_split
from ecap.errors import EcapError
from ecap.images import ImageReadError, PreparedImage, prepare_image
from ecap.records import Instruction, Item

from .config import TrainerConfig

Row = dict[str, Any]
#: ``records(record_type, ids) -> {id: record}``, as :class:`ecap.interfaces.PluginContext` has.
RecordLookup = Callable[[str, list[str]], dict[str, Any]]


def in_validation(pair_id: str, fraction: float) -> bool:
    """Whether a pair is held out for validation: :func:`ecap.datasets.hashed_split`'s bottom
    ``fraction``, so a pair never changes sides between runs, whatever else the dataset holds,
    and an exported dataset's ``split`` column agrees with training."""
    return fraction > 0 and hashed_split(pair_id, validation_fraction=fraction) == "validation"


@dataclass(frozen=True)
class Split:
    """Rows on each side of the split, and which pairs went where (recorded in Model.meta)."""

    train: list[Row]
    validation: list[Row]
    train_pairs: list[str]
    validation_pairs: list[str]


def split_rows(rows: Sequence[tuple[str, Row]], fraction: float) -> Split:
    """``(pair_id, row)`` pairs divided by :func:`in_validation`. Refuses an empty training side."""
    train = [(pid, row) for pid, row in rows if not in_validation(pid, fraction)]
    held = [(pid, row) for pid, row in rows if in_validation(pid, fraction)]
    if not rows:
        raise EcapError("the training dataset is empty: the step received no items")
    if not train:
        raise EcapError(
            f"validation_fraction={fraction} left no pair for training ({len(held)} all held out)"
        )
    return Split(
        train=[row for _, row in train],
        validation=[row for _, row in held],
        train_pairs=sorted({pid for pid, _ in train}),
        validation_pairs=sorted({pid for pid, _ in held}),
    )


class Question(Protocol):
    """What the user turn is made of: the trainers' configs and the ``sft``/``dpo`` exporters'
    share these fields, so an exported row asks exactly what training asks."""

    prompt: str
    system: str | None
    source_label: str | None
    target_label: str | None


def user_turn(config: Question) -> list[dict[str, Any]]:
    """The conversation up to the answer; images are ``{"type": "image"}`` placeholders that TRL
    fills from the ``images`` column, in order."""
    parts: list[dict[str, Any]] = []
    for label in (config.source_label, config.target_label):
        if label:
            parts.append({"type": "text", "text": label})
        parts.append({"type": "image"})
    parts.append({"type": "text", "text": config.prompt})
    messages: list[dict[str, Any]] = []
    if config.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": config.system}]})
    messages.append({"role": "user", "content": parts})
    return messages


def answer(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def prepared_pair(item: Item, max_pixels: int | None) -> list[PreparedImage]:
    """The pair's (source, target) read, hash-checked and normalised as captioners read them, or
    an error naming the pair and the file."""
    images = []
    for side, ref in (("source", item.pair.source), ("target", item.pair.target)):
        try:
            images.append(prepare_image(ref, max_pixels=max_pixels))
        except ImageReadError as exc:
            raise EcapError(f"pair {item.pair.id}: {side} image unreadable: {exc}") from exc
    return images


def pair_images(item: Item, max_pixels: int | None) -> list[Any]:
    """The pair's (source, target) as PIL images, or an error naming the pair and the file."""
    return [prepared.decoded() for prepared in prepared_pair(item, max_pixels)]


#: What chat templates and processors read as control or media tokens (``<|image_pad|>``,
#: ``<|video_pad|>``, ``<|im_end|>``...): inside an answer they would be tokenized as the token
#: itself, so a processor refuses the row (a media token with no media) or the model learns to
#: emit control tokens.
CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def trainable_text(text: str, pair_id: str, role: str) -> str:
    """``text`` if a model can be trained on it; otherwise an error naming the row."""
    token = CONTROL_TOKEN.search(text)
    if token:
        raise EcapError(
            f"pair {pair_id}: the {role} instruction contains the control token "
            f"{token.group()!r}, which a processor reads as the token itself; clean or drop "
            "that instruction before training"
        )
    return text


def sft_answer(item: Item) -> str:
    """The item's instruction as the answer an SFT row teaches, or an error naming the pair."""
    if item.instruction is None or not item.instruction.text.strip():
        raise EcapError(
            f"pair {item.pair.id}: no instruction to train on (sft needs items that carry one)"
        )
    return trainable_text(item.instruction.text, item.pair.id, "training")


def sft_rows(items: Sequence[Item], config: TrainerConfig) -> list[tuple[str, Row]]:
    """One row per item: its images, the question and its instruction as the answer."""
    rows = []
    for item in items:
        text = sft_answer(item)
        row: Row = {"images": pair_images(item, config.max_pixels)}
        if config.answer_only_loss:
            row["prompt"] = user_turn(config)
            row["completion"] = answer(text)
        else:
            row["messages"] = user_turn(config) + answer(text)
        rows.append((item.pair.id, row))
    return rows


def dpo_rows(
    items: Sequence[Item], config: TrainerConfig, records: RecordLookup | None
) -> list[tuple[str, Row]]:
    """One row per preference: its pair's images, the question, the chosen and rejected
    instructions (read from the store by id)."""
    return [
        (
            item.pair.id,
            {
                "images": pair_images(item, config.max_pixels),
                "prompt": user_turn(config),
                "chosen": answer(chosen),
                "rejected": answer(rejected),
            },
        )
        for item, (chosen, rejected) in zip(items, preference_texts(items, records), strict=True)
    ]


def preference_texts(items: Sequence[Item], records: RecordLookup | None) -> list[tuple[str, str]]:
    """Each item's (chosen, rejected) instruction texts, read from the store by id in one
    lookup, or an error naming the first pair that cannot be trained on."""
    missing = [item.pair.id for item in items if item.preference is None]
    if missing:
        raise EcapError(
            f"pair {missing[0]}: no preference to train on (dpo needs items carrying "
            f"(chosen, rejected); {len(missing)} of {len(items)} have none)"
        )
    if records is None:
        raise EcapError("dpo needs the store's records to read chosen/rejected instructions")
    wanted = sorted({rid for item in items if item.preference for rid in _preference_ids(item)})
    found: dict[str, Instruction] = records("instruction", wanted) if wanted else {}
    texts = []
    for item in items:
        chosen, rejected = (
            trainable_text(_stored_text(found, rid, item, role), item.pair.id, role)
            for role, rid in zip(("chosen", "rejected"), _preference_ids(item), strict=True)
        )
        texts.append((chosen, rejected))
    return texts


def _stored_text(found: dict[str, Instruction], rid: str, item: Item, role: str) -> str:
    record = found.get(rid)
    if record is None:
        raise EcapError(f"pair {item.pair.id}: {role} instruction {rid} is not in the store")
    return record.text


def _preference_ids(item: Item) -> tuple[str, str]:
    assert item.preference is not None
    return item.preference.chosen_id, item.preference.rejected_id
