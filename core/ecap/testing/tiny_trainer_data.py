"""Training data a tiny model can learn in seconds: the instruction depends on the image.

Each pair's source is a plain background of a random light shade; its target is the same with a
square of one colour at a random place. The instruction names the colour only, so a model that
answers right on pairs it never saw has learnt to look at the target image::

    items = colour_pairs(tmp_path, 16, seed=0)       # (pair, instruction) items for SFT
    items, texts = colour_preferences(tmp_path, 16)  # (pair, preference) items for DPO

Images are 64x64 PNG files written under the folder, referenced by path and sha256 exactly as an
import would.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..interfaces import PluginContext
from ..models import ResolvedModel, resolve_model
from ..records import ImageRef, Instruction, Item, Pair, Preference

#: Colour name -> RGB of the square the instruction asks for.
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}
SIZE = 64
#: A rejected answer: a vague verb and nothing a model could act on.
VAGUE = "Modify the image."


def instruction_for(colour: str) -> str:
    return f"Add a {colour} square."


def _image_ref(path: Path, size: int) -> ImageRef:
    data = path.read_bytes()
    return ImageRef(
        uri=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        width=size,
        height=size,
        format="PNG",
    )


def _pair(folder: Path, index: int, colour: str, rng: random.Random, size: int) -> Pair:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    shade = rng.randint(150, 240)
    source = Image.new("RGB", (size, size), (shade, shade, shade))
    target = source.copy()
    side = rng.randint(size // 2, size * 3 // 4)
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    ImageDraw.Draw(target).rectangle([x, y, x + side, y + side], fill=COLOURS[colour])
    source_path, target_path = folder / f"{index}-source.png", folder / f"{index}-target.png"
    source.save(source_path)
    target.save(target_path)
    return Pair.of(_image_ref(source_path, size), _image_ref(target_path, size), category="add")


def colour_pairs(folder: Path, count: int, *, seed: int = 0, size: int = SIZE) -> list[Item]:
    """``count`` (pair, instruction) items of ``size`` px images, colours alternating, drawn
    from ``seed``."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        colour = list(COLOURS)[index % len(COLOURS)]
        pair = _pair(folder / f"seed{seed}-{size}px", index, colour, rng, size)
        instruction = Instruction(
            pair_id=pair.id, text=instruction_for(colour), origin="human", author="tests"
        )
        items.append(Item(pair=pair, instruction=instruction))
    return items


def colour_preferences(
    folder: Path, count: int, *, seed: int = 0
) -> tuple[list[Item], dict[str, Instruction]]:
    """``count`` (pair, preference) items whose chosen instruction names the square's colour
    and whose rejected one is :data:`VAGUE` (the failure humans correct most), and every
    instruction by id (what ``PluginContext.records("instruction", ids)`` would return)."""
    items, texts = [], {}
    for item in colour_pairs(folder, count, seed=seed):
        assert item.instruction is not None
        chosen = item.instruction
        rejected = Instruction(pair_id=item.pair.id, text=VAGUE, origin="model", author="tests")
        texts[chosen.id], texts[rejected.id] = chosen, rejected
        preference = Preference(pair_id=item.pair.id, chosen_id=chosen.id, rejected_id=rejected.id)
        items.append(Item(pair=item.pair, preference=preference))
    return items, texts


def training_context(
    work_dir: Path,
    *,
    step_id: str = "train",
    records: dict[str, Instruction] | None = None,
    metrics: list[tuple[int, dict[str, float]]] | None = None,
    trained: dict[str, Any] | None = None,
) -> PluginContext:
    """A PluginContext as the runner builds one for a train step: ``records`` answers
    ``records("instruction", ids)``, logged metrics are appended to ``metrics``, and
    ``{step: NAME}`` resolves to the Model record ``trained[NAME]``."""
    known = records or {}

    def lookup(record_type: str, ids: list[str]) -> dict[str, Instruction]:
        assert record_type == "instruction"
        return {i: known[i] for i in ids if i in known}

    def resolve(ref: Any) -> ResolvedModel:
        return resolve_model(ref, work_dir, trained=(trained or {}).__getitem__)

    return PluginContext(
        step_id=step_id,
        base_dir=work_dir,
        work_dir=work_dir / "work" / step_id,
        records=lookup,
        resolve_model=resolve,
        log_metrics=None
        if metrics is None
        else (lambda step, values: metrics.append((step, values))),
    )


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: a tiny model trains as fast on one, and on a shared
    machine two threads contending with other processes run many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


__all__ = ["COLOURS", "colour_pairs", "colour_preferences", "instruction_for", "training_context"]
