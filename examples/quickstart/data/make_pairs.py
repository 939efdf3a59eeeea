"""Draw the quickstart's image pairs (run once; the PNGs are committed next to this file).

Each pair is a tiny synthetic scene and an edited copy, with the instruction and structured
reference a careful annotator would write for it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
SIZE = 96


def scene(
    sky: str = "#87ceeb",
    ball: tuple[int, int] | None = (30, 60),
    ball_color: str = "red",
    tree: bool = False,
    sun: bool = True,
    box: str | None = None,
) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 70, SIZE, SIZE], fill="#3c9d3c")  # grass
    if sun:
        draw.ellipse([70, 6, 88, 24], fill="#ffd700")
    if tree:
        draw.rectangle([72, 45, 78, 72], fill="#8b5a2b")
        draw.ellipse([62, 25, 88, 50], fill="#1f6f1f")
    if ball:
        x, y = ball
        draw.ellipse([x - 8, y - 8, x + 8, y + 8], fill=ball_color)
    if box:
        draw.rectangle([40, 52, 58, 70], fill=box)
    return image


PAIRS = [
    (
        "ball-color",
        scene(),
        scene(ball_color="blue"),
        "Change the red ball to blue.",
        "attribute",
        ["the ball's colour changes from red to blue"],
        [],
        "A red ball on grass becomes blue; nothing else changes.",
    ),
    (
        "ball-move",
        scene(),
        scene(ball=(66, 60)),
        "Move the red ball from the left side of the image to the right side.",
        "position",
        ["the red ball moves from left to right"],
        [],
        "The ball is moved across the lawn to the right.",
    ),
    (
        "add-tree",
        scene(),
        scene(tree=True),
        "Add a small tree with a green crown on the right, below the sun.",
        "add",
        ["a tree appears on the right"],
        ["the tree partly covers the sky"],
        "A small tree is added at the right of the scene.",
    ),
    (
        "remove-sun",
        scene(),
        scene(sun=False),
        "Remove the yellow sun from the upper right corner.",
        "remove",
        ["the sun is removed"],
        [],
        "The sky is left empty after removing the sun.",
    ),
    (
        "night",
        scene(),
        scene(sky="#0b1d3a", sun=False),
        "Turn the scene into night: make the sky dark blue and remove the sun.",
        "global",
        ["the sky turns dark blue"],
        ["the sun disappears"],
        "Daytime becomes night.",
    ),
    (
        "add-box",
        scene(ball=None),
        scene(ball=None, box="#a0522d"),
        "Place a brown wooden box in the middle of the grass.",
        "add",
        ["a brown box appears at the centre"],
        [],
        "A box is added on the lawn.",
    ),
]


def main() -> None:
    rows = []
    for name, source, target, instruction, category, primary, secondary, overall in PAIRS:
        source.save(HERE / "images" / f"{name}-source.png", optimize=True)
        target.save(HERE / "images" / f"{name}-target.png", optimize=True)
        rows.append(
            {
                "source": f"images/{name}-source.png",
                "target": f"images/{name}-target.png",
                "instruction": instruction,
                "category": category,
                "primary": json.dumps(primary),
                "secondary": json.dumps(secondary),
                "overall": overall,
            }
        )
    with (HERE / "pairs.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
