"""The default rubric's prompts. The rules and numbers are the EditCaption paper's (appendix B);
the wording is ours. Each prompt judges one axis and asks for facts as JSON; the scoring rules are
applied to those facts in code (see :mod:`ecap.rubric`).

The judge is not told which model wrote the instruction, so that scores stay blind.
"""

from __future__ import annotations

from ecap.rubric import PAPER_WEIGHTS, Axis, Rubric

SYSTEM = (
    "You grade image-editing instructions. You see the source image first and the edited image "
    "second, a structured reference describing the true changes, and an instruction written to "
    "turn the first image into the second. You grade exactly one dimension, named below, and "
    "nothing else. Answer with one JSON object and no other text."
)

ACCURACY = """Dimension: ACCURACY — is everything the instruction says true?

Judge facts only. A complete or fluent instruction with a wrong fact loses points; a short
instruction whose every statement is true may score high. Ignore how complete or how clear it is,
except for the minimum coverage rule below. A missing degree ("red" for "deep red") is a clarity
matter, not an accuracy error.

Reference:
{reference}

Instruction:
{instruction}

Work through these steps, then answer:
1. Split the instruction into its individual assertions (object, operation, attribute).
2. For every numbered primary change of the reference, say whether the instruction covers it:
   "hit", "partial" (mentioned without the decisive attribute) or "miss".
3. hallucination: true if the instruction asks for an operation or object that the images do not
   show (an invented addition, removal or change).
4. major_errors: wrong facts about the primary changes (wrong colour, wrong direction, wrong
   object, left/right swapped). minor_errors: wrong facts about elements that did not change or
   about secondary details.
5. score from 1 to 5: 5 all facts right and at least half the primary changes covered; 4 core
   facts right with a flaw on a minor element, or coverage between 30% and 50%; 3 one major error
   or coverage under 30%; 2 two or more major errors or an invented operation; 1 wrong object or
   unrelated to the images.
"""

COMPLETENESS = """Dimension: COMPLETENESS — how many of the primary changes does the instruction
mention?

Count only. Whether the instruction gets an attribute right does not matter here: mentioning the
changed object together with the kind of operation is a hit, even with a wrong or vague attribute.
A change that is not mentioned, or whose direction is reversed (reference: added; instruction:
removed), is a miss. Mentioning the object with no concrete change is "partial".

Reference:
{reference}

Instruction:
{instruction}

Work through these steps, then answer:
1. For every numbered primary change of the reference, give "hit", "partial" or "miss".
2. secondary_covered: true if the instruction also mentions any secondary change.
3. score from 1 to 5 by the share of primary changes hit (100%: 5, 75% or more: 4.5, 60% or
   more: 4, 50% or more: 3, 20% or more: 2, none: 1), plus 0.5 if not all primary changes are hit
   but secondary ones are mentioned. Never lower a score for any other reason.
"""

CLARITY = """Dimension: CLARITY — could someone who never sees the edited image carry out this
instruction exactly, from the text alone?

Judge the wording only: a clear instruction can score high even if it is wrong or incomplete, and
a correct one loses points for vagueness. In order of importance: no ambiguity (half of the
grade), explicit attributes of every target object such as colour, material, shape and size (two
fifths), and concision (the rest; long text with little information loses points).

Vague terms to list when present:
- verbs without an explicit target state: adjust, process, optimize, modify;
- hedged degrees: appropriate, slightly, a bit, somewhat;
- references that need the image to resolve: that, this, it, "as in the original image".

Reference (use it only to know which attributes matter):
{reference}

Instruction:
{instruction}

Work through these steps, then answer:
1. forbidden_terms: every vague term above that occurs in the instruction, as written.
2. missing_attributes: attributes a blind executor would need but the instruction omits.
3. score from 1 to 5: 5 nothing ambiguous and every object fully specified (shade, material,
   size, position); 4 unambiguous with one or two secondary attributes missing; 3 object and
   operation identifiable but key target attributes missing; 2 a vague term or an unclear
   reference; 1 not executable. With one vague term the score is at most 3, with two at most 2.5,
   with three or more at most 2.
"""


def default_rubric() -> Rubric:
    """The paper's three axes with weights 0.4 / 0.4 / 0.2."""
    return Rubric(
        axes=[
            Axis(name=name, weight=PAPER_WEIGHTS[name], prompt=prompt, rule=name)
            for name, prompt in (
                ("accuracy", ACCURACY),
                ("completeness", COMPLETENESS),
                ("clarity", CLARITY),
            )
        ]
    )
