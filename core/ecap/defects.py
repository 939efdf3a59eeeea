"""The human defect checklist (the EditCaption paper's Table 5) as data, and the grading rule.

A human verdict carries defect codes in its ``labels``, each ``"P<severity>:<category>"``: for
example ``"P0:viewpoint"`` or ``"P1:leakage"``. Severity is ``P0`` (critical: the instruction is
unusable), ``P1`` (major: usable, but editing quality suffers) or ``P2`` (minor: executable as it
is). The category is one of the eight checklist ids below; the checklist's row number is accepted
as an alias (``"P0:4"`` is ``"P0:viewpoint"``), and :func:`normalize_code` turns either form into
the canonical one. Not every severity is allowed for every category: text, attribute and omission
errors are P0 on the main subject and P1 elsewhere; a viewpoint error is always P0; global visual
attributes and target leaks are P1; redundancy and other issues are P2.

Grading is hierarchical, as the paper's annotators were told: an instruction's grade is its most
severe defect, so a P0 hides any P1 or P2 on the same instruction, and a P1 hides any P2. An
instruction with no defect is ``"correct"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ecap.errors import EcapError

Severity = Literal["P0", "P1", "P2"]
Grade = Literal["correct", "P0", "P1", "P2"]

#: Most severe first.
SEVERITIES: tuple[Severity, ...] = ("P0", "P1", "P2")
#: Every grade, best first (the order reports use).
GRADES: tuple[Grade, ...] = ("correct", "P2", "P1", "P0")
#: A grade as a usability score: higher is better. Used to rank-correlate judges with humans.
USABILITY: dict[Grade, int] = {"correct": 3, "P2": 2, "P1": 1, "P0": 0}
SEVERITY_MEANING: dict[Severity, str] = {
    "P0": "critical: the instruction cannot be used",
    "P1": "major: usable, but the edit would suffer",
    "P2": "minor: executable as it stands",
}


class DefectCodeError(EcapError, ValueError):
    """A defect code that is not ``P<severity>:<category>`` with an allowed pair."""


@dataclass(frozen=True)
class SeverityOption:
    """One severity a category may take, and when it applies."""

    severity: Severity
    applies_to: str


@dataclass(frozen=True)
class DefectCategory:
    """One row of the checklist."""

    number: int  # the checklist's row number (1-8)
    id: str  # the canonical id used in codes
    name: str
    description: str
    options: tuple[SeverityOption, ...]

    @property
    def severities(self) -> tuple[Severity, ...]:
        return tuple(o.severity for o in self.options)

    def code(self, severity: str) -> str:
        return code(severity, self.id)


_SUBJECT = "the main subject or primary edit"
_ELSEWHERE = "background or secondary elements (under a tenth of the image)"

CHECKLIST: tuple[DefectCategory, ...] = (
    DefectCategory(
        1,
        "text",
        "Text recognition or editing error",
        "What the instruction says about text in the image is wrong: the text did not change, "
        "changed differently, or is misspelt or garbled.",
        (SeverityOption("P0", _SUBJECT), SeverityOption("P1", _ELSEWHERE)),
    ),
    DefectCategory(
        2,
        "attribute",
        "Instruction or attribute error",
        "An edit or one of its attributes (colour, shape, material, style, count, size) is "
        "stated wrongly, or is stated in a way the images cannot confirm.",
        (SeverityOption("P0", _SUBJECT), SeverityOption("P1", _ELSEWHERE)),
    ),
    DefectCategory(
        3,
        "omission",
        "Instruction or content omission",
        "An edit, or an attribute needed to carry it out, is left out, the target of the edit is "
        "ambiguous, or the wrong operation is named (add instead of move, remove-and-add instead "
        "of replace).",
        (SeverityOption("P0", _SUBJECT), SeverityOption("P1", _ELSEWHERE)),
    ),
    DefectCategory(
        4,
        "viewpoint",
        "Viewpoint or spatial relation error",
        "Within one scene, the camera angle, orientation, distance, left/right or occlusion is "
        "described wrongly or not at all.",
        (SeverityOption("P0", "any element"),),
    ),
    DefectCategory(
        5,
        "global",
        "Global visual attribute error",
        "A change of lighting, tone, brightness or saturation is described wrongly or is missing.",
        (SeverityOption("P1", "the whole image"),),
    ),
    DefectCategory(
        6,
        "leakage",
        "Information leakage",
        "The instruction relies on something that only the edited image shows, so it cannot be "
        "followed from the source image alone.",
        (SeverityOption("P1", "any element"),),
    ),
    DefectCategory(
        7,
        "redundant",
        "Redundant or verbose description",
        "Wording repeats itself, contradicts itself or says nothing.",
        (SeverityOption("P2", "any element"),),
    ),
    DefectCategory(
        8,
        "other",
        "Other issue",
        "Any other minor problem, including describing a change between two identical images.",
        (SeverityOption("P2", "any element"),),
    ),
)

CATEGORIES: dict[str, DefectCategory] = {c.id: c for c in CHECKLIST}
_BY_NUMBER: dict[str, DefectCategory] = {str(c.number): c for c in CHECKLIST}
#: Every allowed code, in checklist order.
ALL_CODES: tuple[str, ...] = tuple(f"{s}:{c.id}" for c in CHECKLIST for s in c.severities)

_CODE = re.compile(r"^\s*(?P<severity>[Pp][0-9]+)\s*:\s*(?P<category>[^\s:]+)\s*$")


@dataclass(frozen=True)
class Defect:
    """A parsed defect code."""

    severity: Severity
    category: DefectCategory

    @property
    def code(self) -> str:
        return f"{self.severity}:{self.category.id}"

    def __str__(self) -> str:
        return self.code


def code(severity: str, category: str) -> str:
    """The canonical code for a severity and a category (id or row number), checked."""
    return parse_code(f"{severity}:{category}").code


def parse_code(text: str) -> Defect:
    """Parse ``"P<severity>:<category>"``; case and surrounding spaces are forgiven."""
    if not isinstance(text, str):
        raise DefectCodeError(f"defect code must be a string, not {type(text).__name__}")
    match = _CODE.match(text)
    if not match:
        raise DefectCodeError(
            f"'{text}' is not a defect code: write P<severity>:<category>, e.g. 'P0:viewpoint'"
        )
    severity = match["severity"].upper()
    if severity not in SEVERITIES:
        raise DefectCodeError(f"'{text}': severity must be P0, P1 or P2")
    key = match["category"].lower()
    category = CATEGORIES.get(key) or _BY_NUMBER.get(key)
    if category is None:
        raise DefectCodeError(
            f"'{text}': unknown defect category '{match['category']}' "
            f"(choose from: {', '.join(CATEGORIES)})"
        )
    if severity not in category.severities:
        allowed = " or ".join(category.severities)
        raise DefectCodeError(f"'{text}': a {category.id} defect is {allowed}, not {severity}")
    return Defect(severity=severity, category=category)


def normalize_code(text: str) -> str:
    """The canonical form of a code (``" p0:4 "`` -> ``"P0:viewpoint"``)."""
    return parse_code(text).code


def is_valid(text: str) -> bool:
    try:
        parse_code(text)
    except DefectCodeError:
        return False
    return True


def validate_codes(codes: Iterable[str]) -> list[str]:
    """Canonical codes, in the given order without duplicates; raises on the first bad one."""
    return list(dict.fromkeys(normalize_code(c) for c in codes))


def grade(codes: Iterable[str]) -> Grade:
    """An instruction's grade: its most severe defect, or ``"correct"`` with none."""
    found = {parse_code(c).severity for c in codes}
    for severity in SEVERITIES:
        if severity in found:
            return severity
    return "correct"


def effective(codes: Iterable[str]) -> list[str]:
    """The codes that count under the hierarchical rule: only those of the most severe level
    present (a P0 hides every P1 and P2). Canonical, without duplicates."""
    defects = [parse_code(c) for c in codes]
    worst = grade(d.code for d in defects)
    return list(dict.fromkeys(d.code for d in defects if d.severity == worst))


def usability(value: Grade) -> int:
    """A grade as a number for rank correlation: correct 3, P2 2, P1 1, P0 0."""
    return USABILITY[value]


def worst(grades: Iterable[Grade]) -> Grade:
    """The most severe of several grades (``"correct"`` when given none)."""
    return min(grades, key=usability, default="correct")


__all__ = [
    "ALL_CODES",
    "CATEGORIES",
    "CHECKLIST",
    "GRADES",
    "SEVERITIES",
    "SEVERITY_MEANING",
    "USABILITY",
    "Defect",
    "DefectCategory",
    "DefectCodeError",
    "Grade",
    "Severity",
    "SeverityOption",
    "code",
    "effective",
    "grade",
    "is_valid",
    "normalize_code",
    "parse_code",
    "usability",
    "validate_codes",
]
