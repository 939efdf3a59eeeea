"""Build ``models/shapes-vl``, the quickstart's base VLM: a small Qwen3-VL with random weights.

Its tokenizer is trained on ShapesEdit's own words (the canonical instructions of a few hundred
generated pairs), so an instruction is about twenty tokens rather than eighty byte pieces, and
it is sized (``--size small``) so that SFT on a CPU runs in about a minute; in that minute it
learns the annotators' language and to see an image get darker, not more (see the README).
Run from the repository root::

    python examples/quickstart/models/make_model.py

The folder is committed; this script is how it was made. The weights are random: everything the
quickstart's models know, they learn in the quickstart.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ecap.testing.tiny_vlm import main as build_model
from ecap_shapes.language import canonical_instruction
from ecap_shapes.operations import GenerationError, compose
from ecap_shapes.source import ShapesConfig, pair_rng

HERE = Path(__file__).resolve().parent
#: Pairs whose instructions train the tokenizer: every family, seeds unused by the quickstart.
CORPUS_PAIRS = 600


def corpus() -> list[str]:
    knobs = ShapesConfig(count=CORPUS_PAIRS, split="tokenizer").knobs()
    texts = set()
    for index in range(CORPUS_PAIRS):
        try:
            example = compose(pair_rng(0, "tokenizer", index), knobs)
        except GenerationError:
            continue
        texts.add(canonical_instruction((*example.primary, *example.secondary)))
    return sorted(texts)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        corpus_file = Path(scratch) / "corpus.txt"
        corpus_file.write_text("\n".join(corpus()))
        build_model(
            ["qwen3-vl", str(HERE / "shapes-vl"), "--size", "small", "--corpus", str(corpus_file)]
        )


if __name__ == "__main__":
    main()
