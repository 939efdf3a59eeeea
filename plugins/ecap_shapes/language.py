"""Words for changes: the reference's sentences (what happened) and the canonical instruction
(what to do). Both come from the same change data, with exact attributes, directions from the
viewer's side and amounts, and never a vague term (no "slightly", "it", "this", "that")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .operations import Change
from .world import Scene

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PATTERNS = {
    "solid": "a plain solid fill",
    "striped": "a striped pattern",
    "checkered": "a checkered pattern",
    "dotted": "a dotted pattern",
}
PLACES = {
    "centre": "in the centre",
    "left": "on the left side",
    "right": "on the right side",
    "upper": "at the top",
    "lower": "at the bottom",
}


def indefinite(phrase: str) -> str:
    """'a red circle', 'an orange star'."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def name(kind: dict[str, Any]) -> str:
    return f"{kind['colour']} {kind['shape']}"


def plural(kind: dict[str, Any]) -> str:
    return f"{name(kind)}s"


def number(n: int) -> str:
    return NUMBERS[n] if 0 <= n < len(NUMBERS) else str(n)


def percent(share: float) -> str:
    return f"{round(share * 100)}%"


def factor(value: float) -> str:
    return f"{value:g}"


def place(position: str) -> str:
    return PLACES.get(position, f"in the {position}") + " of the image"


def extent(direction: str | None) -> str:
    return "width" if direction in ("left", "right") else "height"


def reference_sentence(change: Change) -> str:
    """What happened, as a reference's primary or secondary change."""
    s, d, a, x = change.subject or {}, change.direction, change.amount, change.details
    match change.operation:
        case "add":
            return f"A {x['size']} {name(s)} is added {place(x['position'])}."
        case "remove":
            return f"The {name(s)} is removed."
        case "replace":
            return (
                f"The {name(s)} is replaced by {indefinite(name(x['new_object']))} "
                "of the same size, in the same place."
            )
        case "background":
            return f"The background colour changes from {x['from']} to {x['to']}."
        case "recolor":
            return f"The {name(s)} changes colour from {s['colour']} to {x['to']}."
        case "texture":
            return f"The {name(s)} changes from {PATTERNS[s['texture']]} to {PATTERNS[x['to']]}."
        case "brightness":
            return f"The whole image becomes {d}, by about {percent(a or 0)}."
        case "tone":
            shift = "more red, less blue" if d == "warmer" else "more blue, less red"
            return f"The colour tone of the whole image becomes {d} ({shift})."
        case "move":
            side = "to the " + d if d in ("left", "right") else d
            return (
                f"The {name(s)} moves {side}, by about {percent(a or 0)} of the image {extent(d)}."
            )
        case "resize":
            return f"The {name(s)} becomes {d}, about {percent(a or 0)} of its original size."
        case "rotate":
            return f"The {name(s)} rotates {a:g} degrees {d}."
        case "swap":
            return f"The {name(s)} and the {name(x['other'])} swap positions."
        case "zoom":
            look = (
                "the whole scene appears larger and closer"
                if d == "in"
                else "the whole scene appears smaller, with more background around it"
            )
            return f"The camera zooms {d} by a factor of about {factor(a or 1)}: {look}."
        case "pan":
            drift = {"left": "to the right", "right": "to the left", "up": "down", "down": "up"}
            return (
                f"The camera pans {_towards(d)} by about {percent(a or 0)} of the image "
                f"{extent(d)}: the whole scene shifts {drift[d or 'left']} in the frame."
            )
        case "count":
            verb = "increases" if d == "more" else "decreases"
            return (
                f"The number of {plural(s)} {verb} from {number(x['from'])} to {number(x['to'])}."
            )
    raise ValueError(f"unknown operation {change.operation!r}")


def instruction_sentence(change: Change) -> str:
    """What to do: the canonical instruction for one change."""
    s, d, a, x = change.subject or {}, change.direction, change.amount, change.details
    match change.operation:
        case "add":
            return f"Add a {x['size']} {name(s)} {place(x['position'])}."
        case "remove":
            return f"Remove the {name(s)}."
        case "replace":
            return (
                f"Replace the {name(s)} with {indefinite(name(x['new_object']))} of the same size."
            )
        case "background":
            return f"Change the background colour from {x['from']} to {x['to']}."
        case "recolor":
            return f"Change the colour of the {name(s)} to {x['to']}."
        case "texture":
            return f"Give the {name(s)} {PATTERNS[x['to']]}."
        case "brightness":
            return f"Make the whole image {d} by about {percent(a or 0)}."
        case "tone":
            return f"Make the colour tone of the whole image {d}."
        case "move":
            return (
                f"Move the {name(s)} {_towards(d)} by about {percent(a or 0)} "
                f"of the image {extent(d)}."
            )
        case "resize":
            return f"Make the {name(s)} {d}, to about {percent(a or 0)} of its original size."
        case "rotate":
            return f"Rotate the {name(s)} {a:g} degrees {d}."
        case "swap":
            return f"Swap the positions of the {name(s)} and the {name(x['other'])}."
        case "zoom":
            return f"Zoom {d} by a factor of about {factor(a or 1)}, keeping the centre fixed."
        case "pan":
            return (
                f"Pan the camera {_towards(d)} by about {percent(a or 0)} of the image {extent(d)}."
            )
        case "count":
            verb = "Increase" if d == "more" else "Reduce"
            return (
                f"{verb} the number of {plural(s)} from {number(x['from'])} to {number(x['to'])}."
            )
    raise ValueError(f"unknown operation {change.operation!r}")


def out_of_view(change: Change) -> list[str]:
    """Secondary changes a camera move causes: objects whose centre left the frame."""
    return [f"The {name(k)} is no longer in view." for k in change.details.get("out_of_view", [])]


def _towards(direction: str | None) -> str:
    return f"to the {direction}" if direction in ("left", "right") else str(direction)


def inventory(scene: Scene) -> str:
    """'a red circle, two blue squares and a green star'."""
    counts = Counter((o.colour, o.shape) for o in scene.objects)
    parts = [
        indefinite(f"{c} {s}") if n == 1 else f"{number(n)} {c} {s}s"
        for (c, s), n in counts.items()
    ]
    if len(parts) <= 1:
        return parts[0] if parts else "no objects"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def overall(source: Scene, primary: Sequence[Change], secondary: Sequence[Change]) -> str:
    changes = " ".join(reference_sentence(c) for c in (*primary, *secondary))
    return (
        f"The source image shows {inventory(source)} on a {source.background} background. "
        f"{changes} Everything else stays the same."
    )


def canonical_instruction(changes: Sequence[Change]) -> str:
    return " ".join(instruction_sentence(c) for c in changes)
