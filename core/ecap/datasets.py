"""Splits by pair id, the test pairs no training may see, and datasets frozen from the store.

Every pair belongs to one split for good, so that no run, resume or re-selection can move a
test pair into training:

- a split its source declares (``pair.meta["split"]``: a benchmark importer marks its pairs
  ``test``, ShapesEdit names the set it generated) is binding when it is ``test``;
- otherwise the split is a fixed function of the pair id (:func:`hashed_split`): validation is
  the bottom of the hash range and test the top, so changing one fraction never moves a pair
  across the other boundary.

Held-out pairs are facts in the store, not in a config: a pair record whose source declared it
``test``, or the test side of a dataset frozen with a test fraction (``ecap dataset build``),
which has a ``used`` edge to each of its pairs. Before a trainer trains, the core asks the store
about every pair its input leads back to (:func:`held_out_pairs`) and refuses held-out ones with
an error naming each pair and where it was held out (:class:`HeldOutPairError`).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import EcapError
from .hashing import digest
from .records import Dataset, Instruction, Item, Pair

if TYPE_CHECKING:
    from .store import Store

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
#: The split no training may use.
HELD_OUT: Split = "test"
#: How many held-out pairs an error names before it summarises the rest.
NAMED_IN_ERRORS = 5


def split_bucket(pair_id: str) -> float:
    """Where a pair falls in [0, 1): a fixed function of its id."""
    value = int(hashlib.sha256(f"ecap-split:{pair_id}".encode()).hexdigest()[:12], 16)
    return value / float(16**12)


def hashed_split(
    pair_id: str, validation_fraction: float = 0.0, test_fraction: float = 0.0
) -> Split:
    """The split of a pair its source did not place: validation below ``validation_fraction``,
    test in the top ``test_fraction`` of the hash range, train between."""
    if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 1:
        raise EcapError(
            f"validation fraction {validation_fraction} and test fraction {test_fraction} must "
            "be at least 0 and leave something for training (their sum below 1)"
        )
    bucket = split_bucket(pair_id)
    if bucket < validation_fraction:
        return "validation"
    if bucket >= 1.0 - test_fraction:
        return "test"
    return "train"


def declared_split(pair: Pair) -> str | None:
    """The split the pair's source recorded, if any (any name: ShapesEdit's ``prefer`` too)."""
    value = pair.meta.get("split")
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def split_of(pair: Pair, validation_fraction: float = 0.0, test_fraction: float = 0.0) -> Split:
    """A pair's split: ``test`` when its source declared it, otherwise by its id's hash."""
    if declared_split(pair) == HELD_OUT:
        return HELD_OUT
    return hashed_split(pair.id, validation_fraction, test_fraction)


# -- the store's held-out pairs ---------------------------------------------------------------


class HeldOutPairError(EcapError):
    """A step about to train was given pairs the store holds out for testing."""


def held_out_pairs(store: Store, pair_ids: Iterable[str]) -> dict[str, str]:
    """Pair id -> where it was held out, for each of ``pair_ids`` the store holds out."""
    from sqlalchemy import select

    from .store.tables import datasets, edges, pairs, step_runs

    wanted = list(dict.fromkeys(pair_ids))
    found: dict[str, str] = {}
    with store.engine.connect() as conn:
        for chunk in _chunks(wanted):
            declared = conn.execute(
                select(pairs.c.id, pairs.c.meta, step_runs.c.step_id, step_runs.c.run_id)
                .outerjoin(step_runs, step_runs.c.id == pairs.c.step_run_id)
                .where(pairs.c.id.in_(chunk))
            )
            for pair_id, meta, step_id, run_id in declared:
                split = meta.get("split") if isinstance(meta, dict) else None
                if isinstance(split, str) and split.strip().lower() == HELD_OUT:
                    found.setdefault(
                        pair_id,
                        f"declared split 'test' by its source (step '{step_id}', run "
                        f"{str(run_id)[:8]})",
                    )
            uses = conn.execute(
                select(edges.c.dst_id, datasets.c.id, datasets.c.name, datasets.c.meta)
                .join(datasets, datasets.c.id == edges.c.src_id)
                .where(
                    edges.c.src_type == "dataset",
                    edges.c.verb == "used",
                    edges.c.dst_type == "pair",
                    edges.c.dst_id.in_(chunk),
                )
            )
            for pair_id, dataset_id, name, meta in uses:
                if isinstance(meta, dict) and meta.get("split") == HELD_OUT:
                    found.setdefault(
                        pair_id, f"test split of dataset '{name}' ({str(dataset_id)[:12]})"
                    )
    return found


def held_out_among(items: Sequence[Item], held_out: dict[str, str]) -> dict[str, str]:
    """Pair id -> why it is held out, for the pairs of ``items`` that are: those the store holds
    out (``held_out``, from :func:`held_out_pairs`) and those whose record in hand declares
    split ``test``."""
    reasons = {}
    for item in items:
        pid = item.pair.id
        if pid in held_out:
            reasons[pid] = held_out[pid]
        elif declared_split(item.pair) == HELD_OUT:
            reasons[pid] = "declared split 'test' by its source"
    return reasons


def refuse_held_out(reasons: dict[str, str], inputs: int, step_id: str) -> None:
    """Raise :class:`HeldOutPairError` naming the held-out pairs (``reasons``, from
    :func:`held_out_among`) among a step's ``inputs`` items, if there are any."""
    if not reasons:
        return
    bad = list(reasons)
    named = "; ".join(f"pair {pid[:12]}: {reasons[pid]}" for pid in bad[:NAMED_IN_ERRORS])
    more = f" (and {len(bad) - NAMED_IN_ERRORS} more)" if len(bad) > NAMED_IN_ERRORS else ""
    raise HeldOutPairError(
        f"step '{step_id}' would train on {len(bad)} of {inputs} pairs held out for testing "
        f"— {named}{more}. A model trained on its test pairs scores what it memorised; give the "
        "step only training pairs (import the test set in its own step), or set the trainer's "
        "`held_out: leave_out` to train without them"
    )


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# -- choosing what a dataset teaches ----------------------------------------------------------


def latest_human_instructions(store: Store, pair_ids: Iterable[str]) -> dict[str, Instruction]:
    """Pair id -> the newest human-written instruction the store holds for it (a refinement or
    correction from any run), for pairs that have one."""
    from sqlalchemy import select

    from .store.tables import instructions

    wanted = list(dict.fromkeys(pair_ids))
    newest: dict[str, str] = {}
    with store.engine.connect() as conn:
        for chunk in _chunks(wanted):
            rows = conn.execute(
                select(instructions.c.pair_id, instructions.c.id)
                .where(instructions.c.pair_id.in_(chunk), instructions.c.origin == "human")
                .order_by(instructions.c.created_at, instructions.c.id)
            )
            for pair_id, instruction_id in rows:
                newest[pair_id] = instruction_id  # ordered oldest first: the last one wins
    records = store.records("instruction", newest.values())
    return {pid: records[iid] for pid, iid in newest.items() if iid in records}  # type: ignore[misc]


def prefer_human(items: Sequence[Item], humans: dict[str, Instruction]) -> list[Item]:
    """Each item with its pair's latest human instruction in place of what it carries (a model
    caption kept by a filter), so a dataset teaches what people wrote wherever they wrote it.
    Items with neither are dropped; scores and verdicts of a replaced caption go with it."""
    chosen = []
    for item in items:
        human = humans.get(item.pair.id)
        if human is not None and (item.instruction is None or item.instruction.id != human.id):
            chosen.append(Item(pair=item.pair, reference=item.reference, instruction=human))
        elif item.instruction is not None:
            chosen.append(item)
    return chosen


def balance_categories(items: Sequence[Item], per_category: int | None = None) -> list[Item]:
    """At most ``per_category`` items of each pair category (unset: as many as the smallest
    category has), chosen by pair-id hash so that the choice is stable and unbiased by order.
    Items without a category form a category of their own."""
    groups: dict[str | None, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.pair.category].append(item)
    if not groups:
        return []
    cap = per_category if per_category is not None else min(len(g) for g in groups.values())
    keep = {
        id(item)
        for group in groups.values()
        for item in sorted(group, key=lambda i: (split_bucket("balance:" + i.pair.id), i.key()))[
            :cap
        ]
    }
    return [item for item in items if id(item) in keep]


# -- freezing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenSplit:
    """One side of a frozen dataset: its items and the Dataset record that names them."""

    split: Split
    items: list[Item]
    dataset: Dataset

    def edges(self, step_run_id: str) -> list[dict[str, Any]]:
        """``used`` edges to what each item carries last (the instruction or preference a row
        teaches) and to each pair, which is what :func:`held_out_pairs` asks about."""
        targets: dict[tuple[str, str], None] = {}
        for item in self.items:
            leaf = item.leaf()
            targets[(leaf.record_type, leaf.id)] = None
            targets[("pair", item.pair.id)] = None
        return [
            {
                "src_type": "dataset",
                "src_id": self.dataset.id,
                "verb": "used",
                "dst_type": record_type,
                "dst_id": record_id,
                "step_run_id": step_run_id,
            }
            for record_type, record_id in targets
        ]


def freeze(
    items: Sequence[Item],
    name: str,
    *,
    validation_fraction: float = 0.0,
    test_fraction: float = 0.0,
    selection: dict[str, Any] | None = None,
) -> list[FrozenSplit]:
    """``items`` divided into train/validation/test by :func:`split_of`, each side content-
    hashed as the runner hashes a train step's input, with what made it in its record's meta."""
    hashed_split("", validation_fraction, test_fraction)  # refuse bad fractions before work
    sides: dict[Split, list[Item]] = defaultdict(list)
    for item in items:
        sides[split_of(item.pair, validation_fraction, test_fraction)].append(item)
    frozen = []
    for split in SPLITS:
        chosen = sides.get(split)
        if not chosen:
            continue
        categories = Counter(item.pair.category or "(none)" for item in chosen)
        dataset = Dataset(
            name=f"{name}/{split}",
            content_hash=digest("dataset", [item.key() for item in chosen]),
            format="items",
            count=len(chosen),
            meta={
                "split": split,
                "of": name,
                "validation_fraction": validation_fraction,
                "test_fraction": test_fraction,
                "selection": selection or {},
                "categories": dict(sorted(categories.items())),
            },
        )
        frozen.append(FrozenSplit(split, chosen, dataset))
    return frozen


def stored_datasets(store: Store) -> list[dict[str, Any]]:
    """Every Dataset record, newest first, with its split and the run that froze it."""
    from sqlalchemy import select

    from .store.tables import datasets, step_runs

    names = ("id", "name", "count", "format", "uri", "meta", "content_hash", "created_at")
    query = (
        select(*(datasets.c[name] for name in names))
        .add_columns(step_runs.c.step_id.label("step"), step_runs.c.run_id.label("run"))
        .outerjoin(step_runs, step_runs.c.id == datasets.c.step_run_id)
        .order_by(datasets.c.created_at.desc(), datasets.c.id)
    )
    with store.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        meta = row.pop("meta") or {}
        row["split"] = meta.get("split")
    return rows


__all__ = [
    "HELD_OUT",
    "SPLITS",
    "FrozenSplit",
    "HeldOutPairError",
    "Split",
    "balance_categories",
    "declared_split",
    "freeze",
    "hashed_split",
    "held_out_among",
    "held_out_pairs",
    "latest_human_instructions",
    "prefer_human",
    "refuse_held_out",
    "split_bucket",
    "split_of",
    "stored_datasets",
]
