"""``ecap init``: a commented starter spec, and two tiny image pairs for it to read.

The spec has one step of each kind a new user needs first (import, caption, judge, export), each
explained where it stands, so that editing it is the tutorial. It validates as written; running it
needs the model and the key it names.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import EcapError

RGB = tuple[int, int, int]

STARTER = """\
# An ecap pipeline: each step names its kind and plugin (`source: csv`), reads the outputs of
# the steps in `from:`, and takes its settings under `with:` (`ecap plugins show csv` lists
# them). Check it with `ecap pipeline validate {name}`, see what would run with
# `ecap pipeline plan {name}`, run it with `ecap pipeline run {name}`.
name: {pipeline}
# Every result is kept in a store, so a second run re-does nothing and a killed run resumes.
# Default: ecap.db next to this file. A PostgreSQL URL works too: store: ${{env:ECAP_STORE}}
# store: sqlite:///ecap.db

steps:
  # 1. Import (source, target) image pairs, with what is known about each: a reference
  #    instruction, and the structured ground truth a judge compares against (primary and
  #    secondary changes as JSON lists, an overall description). Paths are relative to the CSV.
  pairs:
    source: csv
    with:
      path: data/pairs.csv

  # 2. Ask a vision-language model for the instruction that turns each source into its target.
  #    Here Qwen3-VL-8B with Hugging Face transformers (pip install -e '.[vlm]', a GPU helps);
  #    `ecap plugins show vlm` lists the other backends (vLLM, any OpenAI-compatible server,
  #    Gemini) and docs/captioners.md the models.
  captions:
    caption: vlm
    from: pairs
    with:
      model: Qwen/Qwen3-VL-8B-Instruct
      backend: transformers
      sampling: {{max_new_tokens: 256}}

  # 3. Judge every instruction on the paper's rubric (Accuracy, Completeness, Clarity) with
  #    Gemini (pip install -e '.[judges]'). The key comes from the environment: never type a
  #    key into a spec. No key or no network? `ecap testing serve-llm` serves a fake API.
  judge:
    judge: gemini
    from: captions
    with:
      model: gemini-2.5-pro
      api_key: ${{env:GEMINI_API_KEY:-}}
      base_url: ${{env:GEMINI_BASE_URL:-}}

  # 4. Write the judged instructions as a dataset (jsonl, parquet or hf).
  dataset:
    export: jsonl
    from: judge
    with:
      path: out/dataset.jsonl
"""


@dataclass(frozen=True)
class StarterPair:
    """A 20-pixel square on white, before and after one edit, with its ground truth."""

    name: str
    before: tuple[int, int, RGB]  # the square's top-left corner and colour
    after: tuple[int, int, RGB]
    instruction: str
    primary: str
    overall: str


RED, BLUE = (200, 30, 30), (30, 60, 200)
PAIRS = [
    StarterPair(
        "recolour",
        (16, 16, RED),
        (16, 16, BLUE),
        "Change the red square to blue.",
        "the square's colour changes from red to blue",
        "A red square on a white background becomes blue.",
    ),
    StarterPair(
        "move",
        (8, 20, RED),
        (36, 20, RED),
        "Move the red square from the left edge to the right edge.",
        "the red square moves from the left to the right",
        "The red square is moved across to the right.",
    ),
]


@click.command("init")
@click.argument("path", default="spec.yaml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def group(path: str, force: bool) -> None:
    """Write a commented starter spec at PATH (default spec.yaml) and two tiny image pairs in
    data/ next to it: import, caption, judge, export."""
    spec = Path(path)
    data = spec.parent / "data"
    written = [spec, data / "pairs.csv", *(data / "images" / f for f in _image_names())]
    existing = [str(p) for p in written if p.exists()]
    if existing and not force:
        raise EcapError(f"{', '.join(existing)} already exist; pass --force to overwrite")
    spec.parent.mkdir(parents=True, exist_ok=True)
    name = spec.stem.replace("_", "-") or "starter"
    spec.write_text(STARTER.format(name=spec.name, pipeline=name))
    _write_pairs(data)
    click.echo(f"wrote {spec} and {len(PAIRS)} image pairs in {data}/")
    click.echo(f"next: ecap pipeline validate {spec}")


def _image_names() -> list[str]:
    return [f"{pair.name}-{side}.png" for pair in PAIRS for side in ("source", "target")]


def _write_pairs(data: Path) -> None:
    """64x64 PNGs of a 20-pixel square on white, and the CSV that lists them."""
    from PIL import Image, ImageDraw

    (data / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for pair in PAIRS:
        files = {}
        for side, (x, y, colour) in (("source", pair.before), ("target", pair.after)):
            image = Image.new("RGB", (64, 64), (255, 255, 255))
            ImageDraw.Draw(image).rectangle((x, y, x + 20, y + 20), fill=colour)
            files[side] = f"images/{pair.name}-{side}.png"
            image.save(data / files[side])
        rows.append(
            {
                **files,
                "instruction": pair.instruction,
                "primary": json.dumps([pair.primary]),
                "secondary": "[]",
                "overall": pair.overall,
            }
        )
    with (data / "pairs.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
