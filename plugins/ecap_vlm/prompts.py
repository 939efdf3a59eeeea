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
#: change), with no vague wording, and its failure analysis and annotation checklist name what
#: captioners miss: camera and viewpoint changes, lighting and tone, "remove X, add Y" where one
#: object replaces another, "add" where an object only moved, and wording a blind editor cannot
#: execute. This is our wording of those rules.
DEFAULT_PROMPT = """\
The first image is the SOURCE, before an edit. The second image is the TARGET, the same picture \
after the edit. Write the instruction a person would give an image editor to turn the source \
into the target.

Rules:
- Cover every visible change, the most important first. Leave out whatever stayed the same.
- Use the precise operation: add, remove, replace, move, recolor, resize, rotate, or turn into. \
When one object takes the place of another, say "replace the X with the Y", not "remove the X \
and add the Y". When an object is the same but somewhere else, say "move the X to ...", not \
"add the X". When an object changes only in one attribute, change that attribute ("make the \
car red").
- Name the result: colours, materials, textures, counts, sizes and positions, for example \
"replace the two white paper cups on the right of the table with three red ceramic mugs".
- Camera changes are edits too: say when the view zooms in or out (and on what), pans left, \
right, up or down, or is seen from another angle (from above, from the left side, closer to \
eye level), and when the framing or crop changes.
- Lighting and tone are edits too: say when the picture becomes brighter or darker, warmer or \
cooler, more or less saturated, when the time of day or the weather changes, or when shadows or \
a light source appear or disappear.
- Write so that someone who never sees the target can carry it out. Do not use verbs that leave \
the result open (modify, adjust, process, optimize, enhance, improve) without naming the result; \
do not hedge amounts ("slightly", "a bit", "somewhat", "appropriately"): give the size of the \
change instead ("twice as large", "to the left edge", "deep blue"); do not point at things with \
"this", "that" or "it" when the object could be unclear, and do not refer to "the original \
image": name the object by what it looks like and where it is.
- Give directions from the viewer's point of view: left and right as they appear in the image.
- Describe objects so that they can be found in the source image.
- Do not describe the two images separately, do not mention "source" or "target", and do not \
explain your reasoning.

Answer with the instruction only, in one to four sentences."""

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
