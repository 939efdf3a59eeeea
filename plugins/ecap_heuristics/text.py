"""Text checks on an editing instruction: each returns why it fires, or ``None``.

Matching is done on a folded copy of the text (:func:`fold`), so that case, repeated whitespace,
hyphenation (``slight-ly``, ``a-bit``, ``opti-\\nmize``), compatibility forms (full-width letters,
ligatures) and letters borrowed from other scripts (a Cyrillic a in ``slightly``) do not hide
a term. The garbled-text and language checks look at the text as written instead, since the tricks
that folding undoes are exactly what they report.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

#: Cyrillic and Greek letters drawn like Latin ones (lower case; text is case-folded first).
CONFUSABLES = str.maketrans(
    {
        unicodedata.lookup("CYRILLIC SMALL LETTER A"): "a",
        unicodedata.lookup("CYRILLIC SMALL LETTER VE"): "b",
        unicodedata.lookup("CYRILLIC SMALL LETTER IE"): "e",
        unicodedata.lookup("CYRILLIC SMALL LETTER IO"): "e",
        unicodedata.lookup("CYRILLIC SMALL LETTER KA"): "k",
        unicodedata.lookup("CYRILLIC SMALL LETTER EM"): "m",
        unicodedata.lookup("CYRILLIC SMALL LETTER EN"): "h",
        unicodedata.lookup("CYRILLIC SMALL LETTER O"): "o",
        unicodedata.lookup("CYRILLIC SMALL LETTER ER"): "p",
        unicodedata.lookup("CYRILLIC SMALL LETTER ES"): "c",
        unicodedata.lookup("CYRILLIC SMALL LETTER TE"): "t",
        unicodedata.lookup("CYRILLIC SMALL LETTER U"): "y",
        unicodedata.lookup("CYRILLIC SMALL LETTER HA"): "x",
        unicodedata.lookup("CYRILLIC SMALL LETTER DZE"): "s",
        unicodedata.lookup("CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I"): "i",
        unicodedata.lookup("CYRILLIC SMALL LETTER YI"): "i",
        unicodedata.lookup("CYRILLIC SMALL LETTER JE"): "j",
        unicodedata.lookup("CYRILLIC SMALL LETTER KOMI DE"): "d",
        unicodedata.lookup("CYRILLIC SMALL LETTER QA"): "q",
        unicodedata.lookup("CYRILLIC SMALL LETTER WE"): "w",
        unicodedata.lookup("LATIN SMALL LETTER SCRIPT G"): "g",
        unicodedata.lookup("GREEK SMALL LETTER ALPHA"): "a",
        unicodedata.lookup("GREEK SMALL LETTER BETA"): "b",
        unicodedata.lookup("GREEK SMALL LETTER EPSILON"): "e",
        unicodedata.lookup("GREEK SMALL LETTER ETA"): "n",
        unicodedata.lookup("GREEK SMALL LETTER IOTA"): "i",
        unicodedata.lookup("GREEK SMALL LETTER KAPPA"): "k",
        unicodedata.lookup("GREEK SMALL LETTER NU"): "v",
        unicodedata.lookup("GREEK SMALL LETTER OMICRON"): "o",
        unicodedata.lookup("GREEK SMALL LETTER RHO"): "p",
        unicodedata.lookup("GREEK SMALL LETTER TAU"): "t",
        unicodedata.lookup("GREEK SMALL LETTER UPSILON"): "u",
        unicodedata.lookup("GREEK SMALL LETTER CHI"): "x",
    }
)
#: Dashes and minus signs that act as hyphens.
DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d", "-"))
#: Characters that render as nothing: zero-width space/joiners, word joiner, BOM, soft hyphen.
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2061\u2062\u2063\u2064")


def fold(text: str) -> str:
    """The text as matching sees it: NFKC, invisible characters removed, case-folded, look-alike
    letters mapped to Latin, dashes made hyphens, whitespace runs made one space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch not in INVISIBLE)
    text = text.casefold().translate(CONFUSABLES).translate(DASHES)
    return re.sub(r"\s+", " ", text).strip()


def text_hash(text: str) -> str:
    """What makes two instructions duplicates: the folded text without punctuation."""
    words = re.findall(r"[^\W_]+", fold(text))
    return hashlib.sha256(" ".join(words).encode()).hexdigest()


def term_pattern(term: str) -> str:
    """A regex for ``term`` on folded text: whole words, any hyphen (and line break after it)
    between letters, spaces or hyphens between words."""
    words = []
    for word in term.casefold().split():
        words.append(r"(?:-\s?)?".join(re.escape(ch) for ch in word))
    return r"(?<![\w-])" + r"[\s-]+".join(words) + r"(?![\w-])"


def _matcher(terms: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<t{i}>{term_pattern(t)})" for i, t in enumerate(terms)))


# -- vague terms (the paper's Clarity rubric) -----------------------------------------------------

#: Verbs that name no result unless a target state follows (``adjust the sky to deep blue``).
VAGUE_VERBS = (
    "adjust",
    "adjusts",
    "adjusted",
    "adjusting",
    "process",
    "processes",
    "processed",
    "optimize",
    "optimizes",
    "optimized",
    "optimizing",
    "optimise",
    "optimises",
    "optimised",
    "optimising",
    "modify",
    "modifies",
    "modified",
    "modifying",
)
#: Degrees that leave the amount to the reader.
VAGUE_DEGREES = (
    "appropriate",
    "appropriately",
    "slightly",
    "slight",
    "a bit",
    "a little bit",
    "a little",
    "somewhat",
    "look better",
    "looks better",
)
#: References a reader without the target cannot resolve. ``that`` counts only as a
#: demonstrative (see :data:`DEMONSTRATIVE_BEFORE`), never as a relative pronoun.
VAGUE_REFERENCES = ("this", "it", "refer to the original image", "refer to original image")
#: Words after which ``that`` points at something (``remove that``, ``on that``), unlike the
#: relative ``the cup that sits on the table``.
DEMONSTRATIVE_BEFORE = frozenset(
    [
        "change",
        "remove",
        "replace",
        "make",
        "move",
        "add",
        "turn",
        "put",
        "place",
        "paint",
        "color",
        "colour",
        "recolor",
        "erase",
        "delete",
        "rotate",
        "flip",
        "shift",
        "swap",
        "keep",
        "use",
        "of",
        "on",
        "in",
        "to",
        "from",
        "with",
        "at",
        "near",
        "behind",
        "above",
        "below",
        "under",
        "over",
        "like",
        "into",
        "onto",
        "and",
        "or",
        "but",
    ]
)
#: What makes a vague verb acceptable: a stated target state after it in the same clause
#: (``to deep blue``, ``into a beach``), not a purpose (``to make it look better``).
TARGET_STATE = re.compile(
    r"\b(?:to(?!\s+(?:make|look|improve|enhance|be|get|give|fit|match)\b)|into|until|by \d)\b"
)
CLAUSE_END = re.compile(r"[.;!?]|, (?:and|then)\b|\bthen\b")


@dataclass(frozen=True)
class VagueTerm:
    kind: str  # verb, degree, reference
    term: str


class VagueTermCheck:
    """The forbidden vague terms of the paper's Clarity rubric."""

    def __init__(self, extra_terms: Iterable[str] = (), allowed: Iterable[str] = ()) -> None:
        skip = {fold(t) for t in allowed}
        self.lists = {
            "verb": [t for t in VAGUE_VERBS if t not in skip],
            "degree": [t for t in (*VAGUE_DEGREES, *extra_terms) if fold(t) not in skip],
            "reference": [t for t in VAGUE_REFERENCES if t not in skip],
        }
        self.that = "that" not in skip
        self.patterns = {kind: _matcher(terms) for kind, terms in self.lists.items() if terms}

    def find(self, text: str) -> list[VagueTerm]:
        folded = fold(text)
        found: list[VagueTerm] = []
        for kind, pattern in self.patterns.items():
            for match in pattern.finditer(folded):
                term = self.lists[kind][int(match.lastgroup[1:])]  # type: ignore[index]
                if kind == "verb" and _has_target_state(folded, match.end()):
                    continue
                found.append(VagueTerm(kind, term))
        if self.that:
            for match in re.finditer(term_pattern("that"), folded):
                before = re.findall(r"[^\W_]+", folded[: match.start()])
                if not before or before[-1] in DEMONSTRATIVE_BEFORE:
                    found.append(VagueTerm("reference", "that"))
        return found

    def __call__(self, text: str) -> str | None:
        found = self.find(text)
        if not found:
            return None
        return ", ".join(f"vague {term.kind} {term.term!r}" for term in found)


def _has_target_state(folded: str, after: int) -> bool:
    clause = CLAUSE_END.split(folded[after:], maxsplit=1)[0]
    return bool(TARGET_STATE.search(clause))


# -- leaks of target-only knowledge ---------------------------------------------------------------

_IMAGE = r"(?:image|picture|photo|photograph|pic|frame|version|one)"
#: Words that single out the target among the pictures. "the other image" or "the new image" is a
#: leak only after a comparison ("as in ..."), since "the other picture on the wall" is an object.
_TARGET_WORDS = ("second", "2nd", "target", "edited", "result", "resulting", "reference")
_TARGET = "(?:" + "|".join(_TARGET_WORDS) + ")"
_COMPARED = "(?:" + "|".join((*_TARGET_WORDS, "other", "right", "new", "final", "after")) + ")"
#: Phrases that only make sense to someone who has seen the target (or the pair side by side).
LEAKS: dict[str, re.Pattern[str]] = {
    "points at the other image": re.compile(
        rf"\b(?:as|like|same as|similar to|shown|seen|as shown|as seen|match(?:ing|es)?|"
        rf"according to|based on)\s+(?:in\s+|on\s+)?(?:the\s+)?{_COMPARED}\s+{_IMAGE}\b"
    ),
    "names the target": re.compile(
        rf"\b(?:the|this)\s+{_TARGET}\s+(?:image|picture|photo|photograph)\b"
        r"|\btarget\s+(?:image|picture|photo|state|result)\b"
        r"|\blike\s+(?:the\s+)?target\b"
    ),
    "numbers the images": re.compile(
        r"\b(?:image|picture|photo|img|pic)\s*(?:#\s*)?(?:2|two|b)\b|<\s*img\s*2\s*>"
    ),
    "undoes an earlier state": re.compile(
        r"\bput\s+(?:it|them|this|that|everything)\s+back\b|\bback\s+to\s+(?:how|the way|what)\b"
        r"|\brestore\s+(?:it|them|the\s+original)\b|\bundo\b|\brevert\b"
    ),
}


def leak(text: str) -> str | None:
    """Why the instruction needs the target to be understood, or ``None``."""
    folded = fold(text)
    found = [
        f"{name}: {match.group(0)!r}"
        for name, pattern in LEAKS.items()
        if (match := pattern.search(folded))
    ]
    return "; ".join(found) or None


# -- garbled text and language --------------------------------------------------------------------

_ALLOWED_CONTROLS = frozenset("\t\n\r")


def garbled(text: str) -> str | None:
    """Replacement characters, control characters, invisible characters, private-use
    characters, words mixing Latin with look-alike letters, or nothing visible at all."""
    problems = []
    if "\ufffd" in text:
        problems.append("replacement character U+FFFD")
    controls = {ch for ch in text if unicodedata.category(ch) == "Cc"} - _ALLOWED_CONTROLS
    if controls:
        problems.append("control characters " + _codepoints(controls))
    invisible = {ch for ch in text if ch in INVISIBLE or unicodedata.category(ch) == "Cf"}
    if invisible:
        problems.append("invisible characters " + _codepoints(invisible))
    if any(unicodedata.category(ch) == "Co" for ch in text):
        problems.append("private-use characters")
    visible = [ch for ch in text if not ch.isspace() and ch not in invisible and ch not in controls]
    if not visible:
        problems.append("no visible characters")
    mixed = [word for word in re.findall(r"[^\W\d_]+", text) if _mixes_scripts(word)]
    if mixed:
        problems.append(f"words mixing scripts: {', '.join(repr(w) for w in mixed[:3])}")
    return "; ".join(problems) or None


def _codepoints(chars: set[str]) -> str:
    return ", ".join(f"U+{ord(ch):04X}" for ch in sorted(chars))


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else "UNKNOWN"


def _mixes_scripts(word: str) -> bool:
    scripts = {_script(ch) for ch in unicodedata.normalize("NFKC", word) if ch.isalpha()}
    return "LATIN" in scripts and len(scripts) > 1


def latin_share(text: str) -> float | None:
    """The share of letters in Latin script (after NFKC); ``None`` when there are no letters."""
    letters = [ch for ch in unicodedata.normalize("NFKC", text) if ch.isalpha()]
    if not letters:
        return None
    return sum(_script(ch) == "LATIN" for ch in letters) / len(letters)


def not_english(text: str, min_latin_share: float) -> str | None:
    """Text in another script (Chinese, Cyrillic ...), or with no letters at all. A Latin-script
    language other than English is not detected: that needs a language model."""
    share = latin_share(text)
    if share is None:
        return "no letters"
    if share < min_latin_share:
        return f"{share:.0%} of letters are Latin (minimum {min_latin_share:.0%})"
    return None


def word_count(text: str) -> int:
    return len(re.findall(r"[^\W_]+(?:['\u2019-][^\W_]+)*", fold(text)))


__all__ = [
    "VagueTermCheck",
    "fold",
    "garbled",
    "latin_share",
    "leak",
    "not_english",
    "term_pattern",
    "text_hash",
    "word_count",
]
