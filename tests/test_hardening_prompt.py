"""The default caption prompt asks for what the paper's failure analysis and annotation checklist
say captioners miss, and for the wording the Clarity rubric rewards."""

from __future__ import annotations

import pytest

from ecap_vlm.prompts import DEFAULT_PROMPT, check_template

PROMPT = " ".join(DEFAULT_PROMPT.lower().split())


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("camera and viewpoint changes", ["zoom", "pan", "angle"]),
        ("lighting and tone", ["lighting", "brighter", "darker", "saturated", "warmer"]),
        ("replace, not remove-and-add", ['"replace the x with the y", not "remove the x and add']),
        ("move, not add", ['"move the x to ...", not "add the x"']),
        ("vague verbs", ["modify", "adjust", "process", "optimize"]),
        ("vague degrees", ['"slightly"', '"a bit"', '"somewhat"', '"appropriately"']),
        ("vague references", ['"this"', '"that"', '"it"', '"the original image"']),
        ("explicit attributes", ["colours", "materials", "counts", "sizes", "positions"]),
    ],
)
def test_the_default_prompt_covers(topic: str, words: list[str]) -> None:
    missing = [word for word in words if word not in PROMPT]
    assert not missing, f"{topic}: {missing}"


def test_the_default_prompt_is_a_valid_template() -> None:
    assert check_template(DEFAULT_PROMPT) == DEFAULT_PROMPT
