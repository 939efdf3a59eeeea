"""ShapesEdit's world: flat scenes of coloured shapes, drawn with Pillow through a camera window.

A scene is plain data (objects, background, global tone); rendering is a pure function of it, so
an edit is a change to the data and the target image is the edited scene drawn again. Positions
and sizes are in scene units, where the source image's frame is the unit square (x to the right,
y downwards, as the viewer sees it). The camera is a square window over the scene: the source
sees ``(0, 0, 1)``; zooming or panning moves the window, so every object, its texture and the
background are cropped and rescaled together, exactly like cropping and rescaling the picture,
but drawn at full resolution instead of interpolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance

#: Object colours, all distinct from every background colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "blue": (31, 90, 200),
    "green": (44, 160, 44),
    "yellow": (240, 200, 20),
    "purple": (128, 60, 170),
    "orange": (245, 130, 20),
    "pink": (240, 110, 170),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "beige": (235, 220, 190),
    "light grey": (200, 200, 200),
    "light blue": (190, 215, 240),
    "pale green": (200, 235, 200),
}
TEXTURES = ("solid", "striped", "checkered", "dotted")

#: Shape -> the rotation (degrees) that maps it onto itself; 0 for a circle (any rotation does).
#: A rotation is only visible, and its direction only decidable, below half of this period.
SYMMETRY: dict[str, int] = {
    "circle": 0,
    "square": 90,
    "triangle": 120,
    "star": 72,
    "hexagon": 60,
    "arrow": 360,
}
SHAPES = tuple(SYMMETRY)

#: An arrow pointing up, head to tail: the one shape whose every rotation is visible.
_ARROW: tuple[tuple[float, float], ...] = (
    (0.0, -1.0),
    (0.6, -0.2),
    (0.25, -0.2),
    (0.25, 1.0),
    (-0.25, 1.0),
    (-0.25, -0.2),
    (-0.6, -0.2),
)


@dataclass(frozen=True)
class Obj:
    """One shape. ``radius`` is its circumradius and ``angle`` its clockwise rotation in degrees,
    both as the viewer sees them; ``uid`` follows the object through edits."""

    uid: int
    shape: str
    colour: str
    x: float
    y: float
    radius: float
    angle: float = 0.0
    texture: str = "solid"

    @property
    def name(self) -> str:
        """How people refer to it: colour and shape, which are unique within a scene."""
        return f"{self.colour} {self.shape}"

    def kind(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "texture": self.texture}


@dataclass(frozen=True)
class Window:
    """The camera: the square of the scene (left, top, side) that fills the image."""

    x0: float = 0.0
    y0: float = 0.0
    side: float = 1.0


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str = "white"
    brightness: float = 1.0  # ImageEnhance factor applied to the whole image
    warmth: float = 0.0  # > 0 shifts red up and blue down; < 0 the reverse
    window: Window = field(default_factory=Window)

    def find(self, uid: int) -> Obj:
        return next(o for o in self.objects if o.uid == uid)

    def without(self, uid: int) -> Scene:
        return replace(self, objects=tuple(o for o in self.objects if o.uid != uid))

    def updated(self, obj: Obj) -> Scene:
        return replace(self, objects=tuple(obj if o.uid == obj.uid else o for o in self.objects))

    def describe(self) -> dict[str, Any]:
        """The scene as JSON-ready data (kept in a reference's meta)."""
        return {
            "background": self.background,
            "objects": [
                {**o.kind(), "x": round(o.x, 4), "y": round(o.y, 4), "radius": round(o.radius, 4)}
                for o in self.objects
            ],
        }


def outline(obj: Obj) -> list[tuple[float, float]]:
    """The shape's polygon in scene units (a circle has none: it is drawn as an ellipse)."""
    if obj.shape == "circle":
        return []
    if obj.shape == "arrow":
        unit = list(_ARROW)
    else:
        corners = {"square": 4, "triangle": 3, "hexagon": 6, "star": 10}[obj.shape]
        start = 45.0 if obj.shape == "square" else 0.0
        unit = []
        for i in range(corners):
            reach = 0.45 if obj.shape == "star" and i % 2 else 1.0
            theta = math.radians(start + 360.0 * i / corners)
            unit.append((reach * math.sin(theta), -reach * math.cos(theta)))
    turn = math.radians(obj.angle)
    cos, sin = math.cos(turn), math.sin(turn)
    # (x, y) -> rotated clockwise on screen (y points down).
    return [
        (obj.x + obj.radius * (ux * cos - uy * sin), obj.y + obj.radius * (ux * sin + uy * cos))
        for ux, uy in unit
    ]


def render(scene: Scene, size: int) -> Image.Image:
    """Draw ``scene`` as the camera sees it, as a ``size`` x ``size`` RGB image.

    Objects are drawn on a canvas with a margin as wide as the largest object and the frame is
    cropped out of it, so an object cut by the frame's edge is drawn exactly as the part of it
    that another window would show, pixel for pixel."""
    scale = size / scene.window.side
    margin = 2 + int(max((o.radius for o in scene.objects), default=0) * scale)
    canvas = Image.new("RGB", (size + 2 * margin,) * 2, BACKGROUNDS[scene.background])
    # The window's offset in pixels, rounded off float noise (0.15 * 160 is 24, not
    # 24.000000000000004), so that a pan by whole pixels shifts every pixel exactly.
    left = round(scene.window.x0 * scale, 6) - margin
    top = round(scene.window.y0 * scale, 6) - margin

    def to_px(x: float, y: float) -> tuple[float, float]:
        return x * scale - left, y * scale - top

    for obj in scene.objects:
        _draw(canvas, obj, to_px, scale)
    image = canvas.crop((margin, margin, margin + size, margin + size))
    if scene.brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(scene.brightness)
    if scene.warmth:
        red, green, blue = image.split()
        red = red.point(lambda v: min(255, round(v * (1 + scene.warmth))))
        blue = blue.point(lambda v: min(255, round(v * (1 - scene.warmth))))
        image = Image.merge("RGB", (red, green, blue))
    return image


def _draw(image: Image.Image, obj: Obj, to_px: Any, scale: float) -> None:
    """Fill the object's mask with its colour and texture; the texture's period is in scene
    units, so it scales with the camera like everything else."""
    mask = Image.new("L", image.size, 0)
    pen = ImageDraw.Draw(mask)
    if obj.shape == "circle":
        (left, top), (right, bottom) = (
            to_px(obj.x - obj.radius, obj.y - obj.radius),
            to_px(obj.x + obj.radius, obj.y + obj.radius),
        )
        pen.ellipse((left, top, right, bottom), fill=255)
    else:
        pen.polygon([to_px(x, y) for x, y in outline(obj)], fill=255)
    box = mask.getbbox()
    if box is None:  # entirely out of view
        return
    fill = Image.new("RGB", image.size, COLOURS[obj.colour])
    if obj.texture != "solid":
        _texture(fill, obj, to_px, scale, box)
    image.paste(fill, (0, 0), mask)


def _texture(fill: Image.Image, obj: Obj, to_px: Any, scale: float, box: tuple[int, ...]) -> None:
    red, green, blue = COLOURS[obj.colour]
    dark = sum(COLOURS[obj.colour]) < 200
    ink = (
        tuple(min(255, c + 120) for c in (red, green, blue))
        if dark
        else (int(red * 0.45), int(green * 0.45), int(blue * 0.45))
    )
    period = max(2.0, obj.radius * 0.5 * scale)
    ox, oy = to_px(obj.x, obj.y)
    pen = ImageDraw.Draw(fill)
    left, top, right, bottom = box
    steps = range(-int((ox - left) / period) - 2, int((right - ox) / period) + 3)
    rows = range(-int((oy - top) / period) - 2, int((bottom - oy) / period) + 3)
    if obj.texture == "striped":
        width = max(1, round(period / 3))
        for i in steps:
            x = ox + i * period
            pen.line((x, top, x, bottom), fill=ink, width=width)
    elif obj.texture == "checkered":
        for i in steps:
            for j in rows:
                if (i + j) % 2:
                    x, y = ox + i * period, oy + j * period
                    pen.rectangle((x, y, x + period - 1, y + period - 1), fill=ink)
    else:  # dotted
        dot = max(1.0, period / 4)
        for i in steps:
            for j in rows:
                x, y = ox + i * period, oy + j * period
                pen.ellipse((x - dot, y - dot, x + dot, y + dot), fill=ink)
