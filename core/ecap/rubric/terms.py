"""Finding the Clarity rubric's vague terms in an instruction, whatever its spelling.

The Clarity ceilings depend on how many forbidden terms an instruction contains, so the count
must not change with how a term is typed: "A  Bit", "a-bit", "some-what" split across a line, or
"slightly" typed with a Cyrillic "s" (U+0455) are all the term. Text and terms are compared in
one canonical form: compatibility forms folded (NFKC: full-width letters, ligatures, non-breaking
spaces), invisible format characters dropped (zero-width spaces and joiners, soft hyphens, BOM),
case folded, common Cyrillic and Greek look-alikes mapped to the Latin letter they imitate,
dashes unified, and runs of whitespace collapsed. A hyphen is read both ways, as a space
("a-bit" is "a bit") and as nothing ("slight-ly" is "slightly").

The paper's list (appendix, Listing 3) is the default vocabulary; each term also matches its
inflections ("adjusted", "optimisation", "slight"). Degree words are vague in any context and are
counted wherever they occur; verbs and references are vague only in some readings ("that" as a
conjunction is fine), so they count only when the judge lists them and the instruction contains
them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

#: Look-alike letters (after case folding) mapped to the Latin letter they imitate. Uppercase-only
#: look-alikes are listed by their lowercase form, since text is case-folded first.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "\u0430": "a",  # cyrillic small letter a
        "\u0432": "b",  # cyrillic small letter ve
        "\u0441": "c",  # cyrillic small letter es
        "\u0501": "d",  # cyrillic small letter komi de
        "\u0435": "e",  # cyrillic small letter ie
        "\u0451": "e",  # cyrillic small letter io
        "\u04bb": "h",  # cyrillic small letter shha
        "\u043d": "h",  # cyrillic small letter en
        "\u0456": "i",  # cyrillic small letter byelorussian-ukrainian i
        "\u0457": "i",  # cyrillic small letter yi
        "\u0458": "j",  # cyrillic small letter je
        "\u043a": "k",  # cyrillic small letter ka
        "\u04cf": "l",  # cyrillic small letter palochka
        "\u043c": "m",  # cyrillic small letter em
        "\u043e": "o",  # cyrillic small letter o
        "\u0440": "p",  # cyrillic small letter er
        "\u051b": "q",  # cyrillic small letter qa
        "\u0455": "s",  # cyrillic small letter dze
        "\u0442": "t",  # cyrillic small letter te
        "\u0443": "y",  # cyrillic small letter u
        "\u051d": "w",  # cyrillic small letter we
        "\u0445": "x",  # cyrillic small letter ha
        # Greek
        "\u03b1": "a",  # greek small letter alpha
        "\u03b2": "b",  # greek small letter beta
        "\u03b5": "e",  # greek small letter epsilon
        "\u03b7": "n",  # greek small letter eta
        "\u03b9": "i",  # greek small letter iota
        "\u03ba": "k",  # greek small letter kappa
        "\u03bc": "u",  # greek small letter mu
        "\u03bd": "v",  # greek small letter nu
        "\u03bf": "o",  # greek small letter omicron
        "\u03c1": "p",  # greek small letter rho
        "\u03c4": "t",  # greek small letter tau
        "\u03c5": "u",  # greek small letter upsilon
        "\u03c7": "x",  # greek small letter chi
        "\u03b3": "y",  # greek small letter gamma
        "\u03f2": "c",  # greek lunate sigma symbol
        # Latin letters that only look like others
        "\u0251": "a",  # latin small letter alpha
        "\u0261": "g",  # latin small letter script g
        "\u0131": "i",  # latin small letter dotless i
        "\u0237": "j",  # latin small letter dotless j
        "\u029f": "l",  # latin letter small capital l
    }
)
_WHITESPACE = re.compile(r"\s+")


def canonical(text: str) -> str:
    """``text`` in the comparison form described above, with hyphens kept as ``-``."""
    text = unicodedata.normalize("NFKC", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf":  # zero-width spaces and joiners, soft hyphen, BOM, bidi marks
            continue
        kept.append("-" if category == "Pd" else char)
    folded = "".join(kept).casefold().translate(_CONFUSABLES)
    return _WHITESPACE.sub(" ", folded).strip()


def readings(text: str) -> tuple[str, ...]:
    """The canonical text with every hyphen read as a space, and with every hyphen (and the line
    break or spaces after it) removed."""
    form = canonical(text)
    spaced = _WHITESPACE.sub(" ", form.replace("-", " ")).strip()
    joined = re.sub(r"-\s*", "", form)
    return (spaced, joined)


@dataclass(frozen=True)
class Term:
    """A forbidden term: its name as the paper writes it, and a regex of its word forms over
    canonical text."""

    name: str
    forms: str
    always: bool  # vague in any context: counted without the judge's reading

    def occurs_in(self, text: str) -> bool:
        pattern = re.compile(rf"(?<![\w]){self.forms}(?![\w])")
        return any(pattern.search(reading) for reading in readings(text))


#: Listing 3: vague verbs (without an explicit target state), degrees and references.
PAPER_TERMS: tuple[Term, ...] = (
    Term("adjust", r"(?:re)?adjust(?:s|ed|ing|ments?)?", always=False),
    Term("process", r"process(?:es|ed|ing)?", always=False),
    Term("optimize", r"optimi[sz](?:e|es|ed|ing|ations?)", always=False),
    Term("modify", r"modif(?:y|ies|ied|ying|ications?)", always=False),
    Term("appropriate", r"appropriate(?:ly)?", always=True),
    Term("slightly", r"slight(?:ly)?", always=True),
    Term("a bit", r"a bit", always=True),
    Term("somewhat", r"somewhat", always=True),
    Term("that", r"that", always=False),
    Term("this", r"this", always=False),
    Term("it", r"it", always=False),
    Term("original image", r"original (?:image|picture|photo|one)", always=False),
)


def extra_term(phrase: str) -> Term:
    """A user's additional vague term, matched as written (in canonical form) in any context."""
    words = readings(phrase)[0].split(" ")
    return Term(canonical(phrase), r"\s".join(re.escape(w) for w in words), always=True)


def vague_terms_in(
    instruction: str, judge_listed: Iterable[str], extra: Iterable[str] = ()
) -> list[str]:
    """The distinct forbidden terms ``instruction`` contains, by name: the paper's degree words
    and the ``extra`` terms wherever they occur, the paper's verbs and references where the judge
    listed them. A term the judge lists that is not on the list, or that the instruction does not
    contain, does not count."""
    listed = [term for term in judge_listed if term.strip()]
    found = set()
    for term in (*PAPER_TERMS, *(extra_term(e) for e in extra if e.strip())):
        if not term.occurs_in(instruction):
            continue
        if term.always or any(term.occurs_in(entry) for entry in listed):
            found.add(term.name)
    return sorted(found)
