"""The edit operations, in the paper's three families, and how a random example is composed.

Each operation proposes one change to a (source, target) scene pair and returns the change, as
machine-readable data, with the edited scenes, or ``None`` when it does not apply (no object left
to rotate, no free space to move into). Operations only ever touch objects that no earlier change
of the same pair touched, so every change stays visible and describable on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .world import BACKGROUNDS, COLOURS, SHAPES, SYMMETRY, TEXTURES, Obj, Scene, Window

Family = Literal["semantic", "stylistic", "structural"]
FAMILIES: tuple[Family, ...] = ("semantic", "stylistic", "structural")

MOVE_AMOUNTS = (0.15, 0.2, 0.25, 0.3)  # share of the image's width (or height)
GROW_FACTORS = (1.5, 2.0)
SHRINK_FACTORS = (0.5, 0.6)
ROTATIONS = (15, 30, 45, 90)  # degrees; only those under half the shape's symmetry period
ZOOM_FACTORS = (1.25, 1.5, 2.0)
PAN_AMOUNTS = (0.1, 0.15, 0.2)
BRIGHTNESS_AMOUNTS = (0.3, 0.4)
WARMTH = 0.15
RADII = (0.07, 0.09, 0.11)
#: Opposite directions: flipping one into the other is an orientation (or viewpoint) error.
OPPOSITE = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "clockwise": "counterclockwise",
    "counterclockwise": "clockwise",
    "in": "out",
    "out": "in",
    "larger": "smaller",
    "smaller": "larger",
    "brighter": "darker",
    "darker": "brighter",
    "warmer": "cooler",
    "cooler": "warmer",
    "more": "fewer",
    "fewer": "more",
}
STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_GAP = 0.03  # between objects, and between an object and the frame's edge


@dataclass(frozen=True)
class Change:
    """One edit, as data: what the reference sentence, the canonical instruction and the rules
    judge are all derived from. ``subject`` is the changed object (colour, shape, texture) as it
    was in the source; ``details`` holds what the operation needs beyond direction and amount."""

    operation: str
    family: Family
    subject: dict[str, str] | None = None
    direction: str | None = None
    amount: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready descriptor (a reference's ``meta["changes"]`` entries)."""
        out: dict[str, Any] = {"operation": self.operation, "family": self.family}
        if self.subject:
            out["object"] = dict(self.subject)
        if self.direction:
            out["direction"] = self.direction
        if self.amount is not None:
            out["amount"] = self.amount
        return {**out, **self.details}

    @classmethod
    def from_descriptor(cls, data: dict[str, Any]) -> Change:
        """The change back from :meth:`describe`'s output (a reference's meta)."""
        known = {"operation", "family", "object", "direction", "amount"}
        return cls(
            operation=data["operation"],
            family=data["family"],
            subject=data.get("object"),
            direction=data.get("direction"),
            amount=data.get("amount"),
            details={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class Draft:
    """A pair being composed: both scenes, the objects already changed, and the next uid."""

    source: Scene
    target: Scene
    touched: set[int] = field(default_factory=set)
    used: set[str] = field(default_factory=set)  # one-per-pair operations already used
    next_uid: int = 1000

    def kinds(self) -> set[tuple[str, str]]:
        """(shape, colour) in either scene: a new object must differ from all of them."""
        return {(o.shape, o.colour) for s in (self.source, self.target) for o in s.objects}

    def untouched(self, rng: random.Random, test: Callable[[Obj], bool] = bool) -> list[Obj]:
        present = {o.uid for o in self.target.objects}
        found = [
            o
            for o in self.source.objects
            if o.uid not in self.touched and o.uid in present and test(self.target.find(o.uid))
        ]
        rng.shuffle(found)
        return found

    def uid(self) -> int:
        self.next_uid += 1
        return self.next_uid


Propose = Callable[[Draft, random.Random], "Change | None"]


def fits(scene: Scene, obj: Obj, ignore: tuple[int, ...] = ()) -> bool:
    """Inside the source frame, clear of every other object."""
    r = obj.radius
    if not (r + _GAP <= obj.x <= 1 - r - _GAP and r + _GAP <= obj.y <= 1 - r - _GAP):
        return False
    return all(
        math.dist((obj.x, obj.y), (o.x, o.y)) > r + o.radius + _GAP
        for o in scene.objects
        if o.uid != obj.uid and o.uid not in ignore
    )


def free_spot(scene: Scene, obj: Obj, rng: random.Random, tries: int = 60) -> Obj | None:
    for _ in range(tries):
        moved = replace(obj, x=rng.uniform(0, 1), y=rng.uniform(0, 1))
        if fits(scene, moved):
            return moved
    return None


def new_kind(draft: Draft, rng: random.Random, shape: str | None = None) -> tuple[str, str] | None:
    """A (shape, colour) not yet in the pair; ``shape`` fixes the shape."""
    taken = draft.kinds()
    options = [
        (s, c) for s in ((shape,) if shape else SHAPES) for c in COLOURS if (s, c) not in taken
    ]
    return rng.choice(options) if options else None


def region(x: float, y: float) -> str:
    """Where a point lies, from the viewer's side: 'upper left', 'right', 'centre', ..."""
    vertical = "upper" if y < 0.36 else "lower" if y > 0.64 else ""
    horizontal = "left" if x < 0.36 else "right" if x > 0.64 else ""
    return " ".join(p for p in (vertical, horizontal) if p) or "centre"


# -- semantic ----------------------------------------------------------------------------------


def add(d: Draft, rng: random.Random) -> Change | None:
    kind = new_kind(d, rng)
    if kind is None:
        return None
    obj = free_spot(
        d.target, Obj(d.uid(), kind[0], kind[1], 0, 0, rng.choice(RADII), texture="solid"), rng
    )
    if obj is None:
        return None
    d.target = replace(d.target, objects=(*d.target.objects, obj))
    d.touched.add(obj.uid)
    size = "small" if obj.radius < 0.08 else "large" if obj.radius > 0.1 else "medium-sized"
    return Change(
        "add", "semantic", obj.kind(), details={"position": region(obj.x, obj.y), "size": size}
    )


def remove(d: Draft, rng: random.Random) -> Change | None:
    for obj in d.untouched(rng):
        d.target = d.target.without(obj.uid)
        d.touched.add(obj.uid)
        return Change("remove", "semantic", obj.kind())
    return None


def replace_object(d: Draft, rng: random.Random) -> Change | None:
    for obj in d.untouched(rng, lambda o: o.shape != "arrow"):
        shapes = [s for s in SHAPES if s != obj.shape]
        rng.shuffle(shapes)
        for shape in shapes:
            kind = new_kind(d, rng, shape)
            if kind is None:
                continue
            new = Obj(d.uid(), kind[0], kind[1], obj.x, obj.y, obj.radius)
            d.target = replace(
                d.target.without(obj.uid), objects=(*d.target.without(obj.uid).objects, new)
            )
            d.touched |= {obj.uid, new.uid}
            return Change("replace", "semantic", obj.kind(), details={"new_object": new.kind()})
    return None


def background(d: Draft, rng: random.Random) -> Change | None:
    if "background" in d.used:
        return None
    d.used.add("background")
    colour = rng.choice([b for b in BACKGROUNDS if b != d.source.background])
    d.target = replace(d.target, background=colour)
    return Change("background", "semantic", details={"from": d.source.background, "to": colour})


# -- stylistic ---------------------------------------------------------------------------------


def recolour(d: Draft, rng: random.Random) -> Change | None:
    taken = d.kinds()
    for obj in d.untouched(rng):
        colours = [c for c in COLOURS if (obj.shape, c) not in taken]
        if colours:
            colour = rng.choice(colours)
            d.target = d.target.updated(replace(d.target.find(obj.uid), colour=colour))
            d.touched.add(obj.uid)
            return Change("recolor", "stylistic", obj.kind(), details={"to": colour})
    return None


def texture(d: Draft, rng: random.Random) -> Change | None:
    for obj in d.untouched(rng):
        pattern = rng.choice([t for t in TEXTURES if t != obj.texture])
        d.target = d.target.updated(replace(d.target.find(obj.uid), texture=pattern))
        d.touched.add(obj.uid)
        return Change("texture", "stylistic", obj.kind(), details={"to": pattern})
    return None


def brightness(d: Draft, rng: random.Random) -> Change | None:
    if "brightness" in d.used:
        return None
    d.used.add("brightness")
    direction, amount = rng.choice(("brighter", "darker")), rng.choice(BRIGHTNESS_AMOUNTS)
    factor = 1 + amount if direction == "brighter" else 1 - amount
    d.target = replace(d.target, brightness=factor)
    return Change("brightness", "stylistic", direction=direction, amount=amount)


def tone(d: Draft, rng: random.Random) -> Change | None:
    if "tone" in d.used:
        return None
    d.used.add("tone")
    direction = rng.choice(("warmer", "cooler"))
    d.target = replace(d.target, warmth=WARMTH if direction == "warmer" else -WARMTH)
    return Change("tone", "stylistic", direction=direction)


# -- structural --------------------------------------------------------------------------------


def move(d: Draft, rng: random.Random) -> Change | None:
    options = [(s, a) for s in STEP for a in MOVE_AMOUNTS]
    for obj in d.untouched(rng):
        rng.shuffle(options)
        current = d.target.find(obj.uid)
        for direction, amount in options:
            dx, dy = STEP[direction]
            moved = replace(current, x=current.x + dx * amount, y=current.y + dy * amount)
            if fits(d.target, moved):
                d.target = d.target.updated(moved)
                d.touched.add(obj.uid)
                return Change("move", "structural", obj.kind(), direction, amount)
    return None


def resize(d: Draft, rng: random.Random) -> Change | None:
    for obj in d.untouched(rng):
        direction = rng.choice(("larger", "smaller"))
        factor = rng.choice(GROW_FACTORS if direction == "larger" else SHRINK_FACTORS)
        current = d.target.find(obj.uid)
        resized = replace(current, radius=current.radius * factor)
        if fits(d.target, resized):
            d.target = d.target.updated(resized)
            d.touched.add(obj.uid)
            return Change("resize", "structural", obj.kind(), direction, factor)
    return None


def rotate(d: Draft, rng: random.Random) -> Change | None:
    for obj in d.untouched(rng, lambda o: SYMMETRY[o.shape] > 0):
        angles = [a for a in ROTATIONS if a < SYMMETRY[obj.shape] / 2]
        direction, angle = rng.choice(("clockwise", "counterclockwise")), rng.choice(angles)
        current = d.target.find(obj.uid)
        turn = angle if direction == "clockwise" else -angle
        d.target = d.target.updated(replace(current, angle=current.angle + turn))
        d.touched.add(obj.uid)
        return Change("rotate", "structural", obj.kind(), direction, float(angle))
    return None


def swap(d: Draft, rng: random.Random) -> Change | None:
    candidates = d.untouched(rng)
    for i, first in enumerate(candidates):
        for second in candidates[i + 1 :]:
            a, b = d.target.find(first.uid), d.target.find(second.uid)
            a2, b2 = replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)
            if fits(d.target, a2, (b.uid,)) and fits(d.target, b2, (a.uid,)):
                d.target = d.target.updated(a2).updated(b2)
                d.touched |= {a.uid, b.uid}
                return Change("swap", "structural", a.kind(), details={"other": b.kind()})
    return None


def _camera(d: Draft, change: Change, window: Window) -> Change:
    """Move the camera; objects whose centre leaves the view become secondary changes."""
    d.used.add("camera")
    d.target = replace(d.target, window=window)
    gone = [
        o.kind()
        for o in d.target.objects
        if not (
            window.x0 <= o.x <= window.x0 + window.side
            and window.y0 <= o.y <= window.y0 + window.side
        )
    ]
    return replace(change, details={**change.details, "out_of_view": gone})


def zoom(d: Draft, rng: random.Random) -> Change | None:
    if "camera" in d.used:
        return None
    direction, factor = rng.choice(("in", "out")), rng.choice(ZOOM_FACTORS)
    side = 1 / factor if direction == "in" else factor
    offset = (1 - side) / 2
    return _camera(
        d, Change("zoom", "structural", None, direction, factor), Window(offset, offset, side)
    )


def pan(d: Draft, rng: random.Random) -> Change | None:
    """The camera moves ``direction``; the scene therefore slides the other way in the frame."""
    if "camera" in d.used:
        return None
    direction, amount = rng.choice(tuple(STEP)), rng.choice(PAN_AMOUNTS)
    dx, dy = STEP[direction]
    return _camera(
        d, Change("pan", "structural", None, direction, amount), Window(dx * amount, dy * amount)
    )


def count(d: Draft, rng: random.Random) -> Change | None:
    """More or fewer copies of one kind of object. For 'fewer' the copies are added to the
    source first, so the source shows several and the target fewer."""
    for obj in d.untouched(rng):
        direction = rng.choice(("more", "fewer"))
        extra = rng.choice((1, 2))
        scene = d.target if direction == "more" else d.source
        copies: list[Obj] = []
        for _ in range(extra):
            spot = free_spot(
                replace(scene, objects=(*scene.objects, *copies)), replace(obj, uid=d.uid()), rng
            )
            if spot is None:
                break
            copies.append(spot)
        if len(copies) < extra:
            continue
        if direction == "more":
            d.target = replace(d.target, objects=(*d.target.objects, *copies))
            before, after = 1, 1 + extra
        else:
            d.source = replace(d.source, objects=(*d.source.objects, *copies))
            before, after = 1 + extra, 1
        d.touched |= {obj.uid, *(c.uid for c in copies)}
        return Change(
            "count",
            "structural",
            obj.kind(),
            direction,
            float(after - before),
            details={"from": before, "to": after},
        )
    return None


OPERATIONS: dict[str, tuple[Family, Propose]] = {
    "add": ("semantic", add),
    "remove": ("semantic", remove),
    "replace": ("semantic", replace_object),
    "background": ("semantic", background),
    "recolor": ("stylistic", recolour),
    "texture": ("stylistic", texture),
    "brightness": ("stylistic", brightness),
    "tone": ("stylistic", tone),
    "move": ("structural", move),
    "resize": ("structural", resize),
    "rotate": ("structural", rotate),
    "swap": ("structural", swap),
    "zoom": ("structural", zoom),
    "pan": ("structural", pan),
    "count": ("structural", count),
}
#: Operations a minor (secondary) change is drawn from: small, local or subtle edits.
SECONDARY_OPERATIONS = ("recolor", "texture", "tone")


# -- composing an example ----------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """How hard the generated pairs are."""

    operations: tuple[str, ...]
    min_objects: int = 3
    max_objects: int = 5
    min_changes: int = 1
    max_changes: int = 1
    secondary_changes: int = 0
    distractor_similarity: float = 0.5


@dataclass(frozen=True)
class Example:
    source: Scene
    target: Scene
    primary: tuple[Change, ...]
    secondary: tuple[Change, ...]


class GenerationError(ValueError):
    """No example with these knobs could be composed (too many objects or changes for the
    space, or no operation applies)."""


def scene(rng: random.Random, knobs: Knobs) -> Scene:
    """A random scene: objects with distinct (shape, colour); with probability
    ``distractor_similarity`` each new object shares its shape or its colour with an earlier one,
    so that only both attributes together name an object."""
    count_ = rng.randint(knobs.min_objects, knobs.max_objects)
    objects: list[Obj] = []
    for uid in range(count_):
        taken = {(o.shape, o.colour) for o in objects}
        pool = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in taken]
        if objects and rng.random() < knobs.distractor_similarity:
            model = rng.choice(objects)
            pool = [k for k in pool if model.shape == k[0] or model.colour == k[1]]
        elif objects:
            shapes, colours = {o.shape for o in objects}, {o.colour for o in objects}
            pool = [k for k in pool if k[0] not in shapes and k[1] not in colours] or pool
        shape, colour = rng.choice(pool)
        angle = 0.0 if SYMMETRY[shape] == 0 else float(rng.choice((0, 10, 20)))
        candidate = Obj(uid, shape, colour, 0, 0, rng.choice(RADII), angle, rng.choice(TEXTURES))
        placed = free_spot(Scene(tuple(objects)), candidate, rng)
        if placed is None:
            raise GenerationError(f"no room for {count_} objects")
        objects.append(placed)
    return Scene(tuple(objects), background=rng.choice(tuple(BACKGROUNDS)))


def compose(rng: random.Random, knobs: Knobs, attempts: int = 20) -> Example:
    """A random example: a scene and ``min_changes``..``max_changes`` primary changes (families
    drawn uniformly, then an operation of the family), then the secondary ones."""
    families = {
        family: [op for op in knobs.operations if OPERATIONS[op][0] == family]
        for family in FAMILIES
    }
    families = {f: ops for f, ops in families.items() if ops}
    secondary_ops = [op for op in SECONDARY_OPERATIONS if op in knobs.operations]
    if knobs.secondary_changes and not secondary_ops:
        raise GenerationError(f"secondary changes need one of {SECONDARY_OPERATIONS}")
    last = "no operation applies"
    for _ in range(attempts):
        try:
            start = scene(rng, knobs)
        except GenerationError as exc:
            last = str(exc)
            continue
        draft = Draft(start, start)
        wanted = rng.randint(knobs.min_changes, knobs.max_changes)
        primary = _draw(
            draft, rng, wanted, lambda: rng.choice(families[rng.choice(list(families))])
        )
        if primary is None:
            continue
        secondary = _draw(draft, rng, knobs.secondary_changes, lambda: rng.choice(secondary_ops))
        if secondary is None:
            continue
        return Example(draft.source, draft.target, tuple(primary), tuple(secondary))
    raise GenerationError(f"could not compose an example in {attempts} attempts ({last})")


def _draw(
    draft: Draft, rng: random.Random, wanted: int, pick: Callable[[], str], tries: int = 30
) -> list[Change] | None:
    changes: list[Change] = []
    for _ in range(tries):
        if len(changes) == wanted:
            break
        change = OPERATIONS[pick()][1](draft, rng)
        if change is not None:
            changes.append(change)
    return changes if len(changes) == wanted else None
