"""The default captioning prompt, and how prompt templates are filled in.

The prompt is a template: ``{category}``, ``{source_width}``, ``{source_height}``,
``{target_width}`` and ``{target_height}`` are replaced by the pair's values (``category`` is
``unknown`` when the pair has none). Literal braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import string
from typing import Any

from ecap.records import Pair

#: The paper asks for instructions that are precise (what, where, how it looks) and complete (every
#: change), with no vague wording; this is our wording of those rules.
DEFAULT_PROMPT = """\
The first image is the SOURCE, before an edit. The second image is the TARGET, the same picture \
after the edit. Write the instruction a person would give an image editor to turn the source \
into the target.

Rules:
- Cover every visible change, the most important first. Leave out whatever stayed the same.
- Use precise verbs such as add, remove, replace, move, recolor, resize, rotate or turn into. Do \
not use vague verbs such as modify, adjust, alter, enhance, improve or edit without saying \
exactly what happens.
- Name colours, materials, textures, counts, sizes and positions explicitly, for example \
"replace the two white paper cups on the right of the table with three red ceramic mugs".
- Give directions from the viewer's point of view: left and right as they appear in the image.
- Describe objects so that they can be found in the source image.
- Do not describe the two images separately, do not mention "source" or "target", and do not \
explain your reasoning.

Answer with the instruction only, in one to three sentences."""

#: Placeholders a prompt template may use.
FIELDS = ("category", "source_width", "source_height", "target_width", "target_height")


def check_template(template: str) -> str:
    """``template`` if it uses only known placeholders; otherwise a ValueError naming them."""
    unknown = sorted(
        {
            name
            for _, name, _, _ in string.Formatter().parse(template)
            if name is not None and name not in FIELDS
        }
    )
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"a prompt may use {', '.join('{' + f + '}' for f in FIELDS)} "
            "(write literal braces as {{ and }})"
        )
    return template


def render(template: str, pair: Pair) -> str:
    values: dict[str, Any] = {
        "category": pair.category or "unknown",
        "source_width": pair.source.width,
        "source_height": pair.source.height,
        "target_width": pair.target.width,
        "target_height": pair.target.height,
    }
    return template.format_map(values)


__all__ = ["DEFAULT_PROMPT", "FIELDS", "check_template", "render"]
