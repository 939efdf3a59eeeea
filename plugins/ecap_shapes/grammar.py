"""Reading an editing instruction about a ShapesEdit scene into assertions.

The grammar, in order:

1. **Clauses.** The lower-cased text is cut at sentence ends (``. ; ! ?``, but not the point
   of "1.5"), at ``then``, and at
   ``and``/``,`` when an editing verb follows ("move the red circle left and make the blue square
   larger" is two clauses; "swap the red circle and the blue square" is one).
2. **Object mentions** in a clause: ``[texture] [colour] [texture] shape`` ("the striped red
   circle", "red circles"), a colour with ``one``/``object``/``shape`` ("the red one"), a pronoun
   (``it``/``them``, resolved to the previous clause's object), or the whole scene ("everything",
   "all objects", "the whole image"). An addition or removal of several objects listed with
   "and" or commas is one assertion per object.
3. **Operation**, the first rule that matches, most specific first: zoom, pan, background,
   brightness, tone, swap/replace, count, rotate, resize, move, texture, recolor, add, remove.
   Each rule has its verbs and synonyms below ("enlarge", "make ... bigger", "scale up" all
   resize to larger).
4. **Attributes** of the operation: direction (the last direction word: left/right/up/down,
   clockwise/counterclockwise, in/out, larger/smaller, brighter/darker, warmer/cooler,
   more/fewer), amount (a percentage, ``N times``, ``a factor of N``, degrees, "half",
   "twice", "a quarter"), target colour or texture (one not part of an object mention, and not
   after "from"), and counts ("from one to three").

Anything a rule does not recognise is left out: an unparsed clause is neither credited nor
counted as an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from itertools import pairwise

OBJECT_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black")
BACKGROUND_COLOURS = ("white", "beige", "light grey", "light blue", "pale green")
_COLOUR_SYNONYMS = {"gray": "grey", "violet": "purple"}
_SHAPE_SYNONYMS = {"disc": "circle", "disk": "circle"}
_TEXTURE_SYNONYMS = {
    "stripes": "striped",
    "stripy": "striped",
    "stripe": "striped",
    "chequered": "checkered",
    "checked": "checkered",
    "checkerboard": "checkered",
    "checkers": "checkered",
    "dots": "dotted",
    "spotted": "dotted",
    "polka-dot": "dotted",
    "polka-dotted": "dotted",
    "polka dot": "dotted",
    "plain": "solid",
}

COLOUR = r"light gr[ae]y|light blue|pale green|white|beige|" + "|".join(OBJECT_COLOURS) + "|violet"
SHAPE = r"circle|disc|disk|square|triangle|star|hexagon|arrow"
TEXTURE = (
    r"striped|stripes|stripy|stripe|checkered|chequered|checked|checkerboard|checkers|"
    r"polka[- ]dott?e?d?|dotted|dots|spotted|solid|plain"
)
VERBS = (
    r"add|insert|put|place|draw|introduce|remove|delete|erase|eliminate|take|get|replace|"
    r"substitute|swap|switch|exchange|change|turn|transform|convert|make|paint|recolou?r|colou?r|"
    r"give|fill|move|shift|slide|push|drag|nudge|rotate|spin|enlarge|shrink|scale|resize|grow|"
    r"zoom|pan|brighten|darken|lighten|increase|decrease|reduce|raise|lower|set|apply|double|"
    r"halve|also"
)
NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "a single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
FRACTIONS = {"a tenth": 0.1, "a fifth": 0.2, "a quarter": 0.25, "a third": 1 / 3, "half": 0.5}

_SPLIT = re.compile(
    rf"\.(?!\d)|[;!?\n]+|,?\s*\bthen\b|,\s*(?:and\s+)?(?=(?:{VERBS})\b)|\s+and\s+(?=(?:{VERBS})\b)"
    r"|\s+while\s+"
)
_MENTION = re.compile(
    rf"\b(?:(?P<t1>{TEXTURE})\s+)?(?:(?P<c>{COLOUR})\s+)?(?:(?P<t2>{TEXTURE})\s+)?"
    rf"(?P<s>{SHAPE})(?:e?s)?\b"
    rf"|\b(?P<c_only>{COLOUR})\s+(?:one|object|shape|thing)s?\b"
    r"|\b(?P<pronoun>it|them)\b"
    r"|\b(?P<scene>everything|all (?:the )?(?:objects|shapes)|the (?:whole|entire) "
    r"(?:scene|image|picture|frame)|the scene|all of them)\b"
)
_DIRECTION = re.compile(
    r"\b(counter[- ]?clockwise|anti[- ]?clockwise|clockwise|left(?:wards?)?|right(?:wards?)?|"
    r"up(?:wards?)?|down(?:wards?)?|higher|lower|top|bottom)\b"
)
_DIRECTION_NAMES = {
    "higher": "up",
    "top": "up",
    "lower": "down",
    "bottom": "down",
}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent\b|per cent\b)")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:°|degrees?\b|deg\b)")
_FACTOR = re.compile(
    r"factor of (?:about |around |roughly |approximately )?(\d+(?:\.\d+)?)"
    r"|(\d+(?:\.\d+)?)\s*(?:x\b|\u00d7|times\b)"
)
NUMBER = r"\d+|" + "|".join(NUMBER_WORDS)


@dataclass(frozen=True)
class Mention:
    """An object named in a clause; ``None`` attributes were not said."""

    shape: str | None = None
    colour: str | None = None
    texture: str | None = None
    pronoun: bool = False
    scene: bool = False
    span: tuple[int, int] = (0, 0)

    @property
    def named(self) -> bool:
        return self.shape is not None or self.colour is not None

    def fits(self, kind: dict[str, str]) -> bool:
        """Whether everything said about the object is true of ``kind``."""
        return all(
            said is None or said == kind.get(attribute)
            for attribute, said in (
                ("shape", self.shape),
                ("colour", self.colour),
                ("texture", self.texture),
            )
        )

    def words(self) -> str:
        if self.scene:
            return "the whole scene"
        said = " ".join(p for p in (self.texture, self.colour, self.shape) if p)
        return said or ("a pronoun" if self.pronoun else "an unnamed object")


@dataclass(frozen=True)
class Assertion:
    """One thing the instruction says to do."""

    operation: str
    clause: str
    objects: tuple[Mention, ...] = ()
    direction: str | None = None
    amount: float | None = None
    colour: str | None = None  # the target colour (recolor, background)
    texture: str | None = None  # the target texture
    counts: tuple[int | None, int | None, int | None] = (None, None, None)  # (from, to, by)


def parse(instruction: str) -> list[Assertion]:
    """The assertions of ``instruction``, in order."""
    text = re.sub(r"[\u2010-\u2015]", "-", instruction.lower())
    assertions: list[Assertion] = []
    previous: Mention | None = None
    for clause in (c.strip(" ,") for c in _SPLIT.split(text) if c):
        if not clause:
            continue
        mentions = _mentions(clause, previous)
        assertion = _assertion(clause, mentions)
        if assertion is not None:
            assertions.extend(_each_object(assertion))
        named = [m for m in mentions if m.named]
        if named:
            previous = named[0]
    return assertions


def _each_object(assertion: Assertion) -> list[Assertion]:
    """ "Remove the red circle and the blue star": one removal per object listed with "and" or
    a comma (an addition likewise)."""
    named = [m for m in assertion.objects if m.named]
    if assertion.operation not in ("add", "remove") or len(named) < 2:
        return [assertion]
    gaps = [assertion.clause[a.span[1] : b.span[0]] for a, b in pairwise(named)]
    if not all(re.fullmatch(r"\s*(?:,|and|, and)\s*(?:(?:the|a|an|one)\s+)?", g) for g in gaps):
        return [assertion]
    return [replace(assertion, objects=(m,)) for m in named]


def _mentions(clause: str, previous: Mention | None) -> list[Mention]:
    found = []
    for match in _MENTION.finditer(clause):
        if match["pronoun"]:
            if previous is not None:
                found.append(replace(previous, pronoun=True, span=match.span()))
            else:
                found.append(Mention(pronoun=True, span=match.span()))
        elif match["scene"]:
            found.append(Mention(scene=True, span=match.span()))
        elif match["c_only"]:
            found.append(Mention(colour=_colour(match["c_only"]), span=match.span()))
        else:
            texture = match["t1"] or match["t2"]
            found.append(
                Mention(
                    shape=_SHAPE_SYNONYMS.get(match["s"], match["s"]),
                    colour=_colour(match["c"]) if match["c"] else None,
                    texture=_texture(texture) if texture else None,
                    span=match.span(),
                )
            )
    return found


def _colour(word: str) -> str:
    word = re.sub(r"gray", "grey", word)
    return _COLOUR_SYNONYMS.get(word, word)


def _texture(word: str) -> str:
    word = re.sub(r"\s+", " ", word)
    if word.startswith("polka"):
        return "dotted"
    return _TEXTURE_SYNONYMS.get(word, word)


def _has(clause: str, pattern: str) -> bool:
    return re.search(pattern, clause) is not None


def _assertion(clause: str, mentions: list[Mention]) -> Assertion | None:
    """Rules, most specific first; ``None`` when no rule matches."""
    objects = tuple(m for m in mentions if not m.scene)
    scene_wide = any(m.scene for m in mentions)
    make = lambda op, **kw: Assertion(op, clause, **kw)  # noqa: E731

    if _has(clause, r"\bzoom|\bcloser\b|\bfarther\b|\bfurther away\b|\bpull(?:s|ed)? back\b"):
        inward = _has(clause, r"zoom\w*\s+(?:in|into)\b|\bcloser\b|\bmagnif")
        outward = _has(clause, r"zoom\w*\s+out\b|\bfarther\b|\bfurther away\b|pull\w* back")
        direction = "in" if inward and not outward else "out" if outward and not inward else None
        return make("zoom", direction=direction, amount=_factor(clause))
    if _has(clause, r"\bpan(?:s|ned|ning)?\b") or (
        _has(clause, r"\b(?:camera|viewpoint|view)\b") and _direction(clause) in STEPS
    ):
        return make("pan", direction=_step(clause), amount=_share(clause))
    if _has(clause, r"\bbackground\b"):
        return make("background", colour=_target_colour(clause, mentions))
    if _has(clause, r"\bbright|\bdark(?:en|er)\b|\bdim(?:mer)?\b|\blighten|\blighter\b|exposure"):
        up = _has(clause, r"\bbright(?:en|er)\b|\blighten|\blighter\b|increase\w* (?:the )?bright")
        down = _has(clause, r"\bdark|\bdim|reduce\w* (?:the )?bright|decrease\w* (?:the )?bright")
        direction = "darker" if down and not up else "brighter" if up and not down else None
        return make("brightness", direction=direction, amount=_share(clause))
    if _has(clause, r"\bwarm|\bcool|\bcold|\btemperature\b|\btone\b"):
        warm, cool = _has(clause, r"\bwarm"), _has(clause, r"\bcool|\bcold")
        direction = "warmer" if warm and not cool else "cooler" if cool and not warm else None
        return make("tone", direction=direction)
    if _has(clause, r"\b(?:swap|switch|exchange|trade|interchange)\w*\b"):
        if _has(clause, r"\bfor\b|\bwith (?:a|an)\b"):
            return make("replace", objects=objects)
        return make("swap", objects=objects)
    if _has(clause, r"\breplac|\bsubstitut") or (
        _has(clause, r"\b(?:turn|change|transform|convert)\w*\b.*\b(?:into|to)\b")
        and sum(m.shape is not None for m in objects) >= 2
    ):
        return make("replace", objects=objects)
    if _is_count(clause):
        more = _has(
            clause, r"\b(?:increase|more|another|additional|extra|add|duplicat|cop(?:y|ies))"
        )
        fewer = _has(clause, r"\b(?:decrease|reduce|fewer|less|remove|delete|take away)")
        direction = "more" if more and not fewer else "fewer" if fewer and not more else None
        return make("count", objects=objects, direction=direction, counts=_counts(clause))
    return _by_verb(clause, objects, mentions, scene_wide)


#: Lead verb (stem) -> the operation it starts; "attribute" verbs (change, make, turn, give...)
#: take the operation from what else the clause says (a size, a texture, a colour, a rotation).
_LEAD_VERBS = re.compile(
    r"\b(?:(?P<rotate>rotat|spin)|(?P<resize>enlarg|shrink|scal|resiz|grow|expand)"
    r"|(?P<move>mov|shift|slid|push|drag|nudg|reposition|relocat)"
    r"|(?P<add>add|insert|put|plac|draw|introduc|creat)"
    r"|(?P<remove>remov|delet|eras|eliminat|take away|take out|get rid)"
    r"|(?P<attribute>chang|paint|recolou?r|colou?r|dye|fill|give|turn|make|set|transform|convert))"
    r"\w*"
)
_ROTATION_CUE = r"clockwise|\bdegree|°"
_SIZE_CUE = r"\bbigger\b|\blarger\b|\bsmaller\b|\bsize\b|\btwice as\b|\bhalf\b"


def _by_verb(
    clause: str, objects: tuple[Mention, ...], mentions: list[Mention], scene_wide: bool
) -> Assertion | None:
    """Object operations, by the clause's first editing verb (declarative clauses such as "the
    red circle becomes larger" have none, and are read by their cues alone)."""
    lead = _LEAD_VERBS.search(clause)
    verb = lead.lastgroup if lead else None
    if re.match(r"(?:\w+\s+)?(?:raise|lower)\b", clause):
        verb = "move"
    if verb in (None, "attribute"):
        if _has(clause, _ROTATION_CUE):
            verb = "rotate"
        elif _has(clause, _SIZE_CUE):
            verb = "resize"
        elif verb is None and _step(clause) and _has(clause, r"\bmoves?\b|\bshifts?\b"):
            verb = "move"
    free_textures = _free(clause, TEXTURE, mentions)
    if verb == "rotate":
        turn = _direction(clause)
        amount = _DEGREES.search(clause)
        return Assertion(
            "rotate",
            clause,
            objects,
            direction=turn if turn in ("clockwise", "counterclockwise") else None,
            amount=float(amount[1]) if amount else None,
        )
    if verb == "resize":
        larger = _has(
            clause, r"\benlarg|\bbigger\b|\blarger\b|scale\w* up|\bgrow|\bexpand|\bdouble"
        )
        smaller = _has(clause, r"\bshrink|\bsmaller\b|scale\w* down|\breduce|\bdecrease|\bhalve")
        direction = (
            "larger" if larger and not smaller else "smaller" if smaller and not larger else None
        )
        return Assertion(
            "resize",
            clause,
            _with_scene(objects, scene_wide),
            direction=direction,
            amount=_scale(clause, direction),
        )
    if verb == "move":
        return Assertion(
            "move",
            clause,
            _with_scene(objects, scene_wide),
            direction=_step(clause),
            amount=_share(clause),
        )
    if verb == "add":
        return Assertion("add", clause, objects)
    if verb == "remove":
        return Assertion("remove", clause, objects)
    if free_textures or _has(clause, r"\bpattern\b|\btexture\b"):
        target = _texture(free_textures[-1]) if free_textures else None
        return Assertion("texture", clause, objects, texture=target)
    if verb == "attribute" or _has(clause, r"\bbecomes?\b|\bturns?\b"):
        colour = _target_colour(clause, mentions)
        if colour is not None or _has(clause, r"\bcolou?r\b"):
            return Assertion("recolor", clause, objects, colour=colour)
    return None


STEPS = ("left", "right", "up", "down")


def _with_scene(objects: tuple[Mention, ...], scene_wide: bool) -> tuple[Mention, ...]:
    """Resizing or moving "everything" is how a zoom or a pan gets misdescribed: keep it."""
    return (Mention(scene=True), *objects) if scene_wide and not objects else objects


def _is_count(clause: str) -> bool:
    if _has(clause, r"\bnumber of\b|\bcount of\b|\bfewer\b|\bduplicat|\bcop(?:y|ies)\b"):
        return True
    adding = _has(clause, r"\b(?:add|insert|put|place|draw)\w*\b")
    removing = _has(clause, r"\b(?:remove|delete|erase|take away)\w*\b")
    return (adding and _has(clause, r"\b(?:more|another|additional|extra)\b")) or (
        removing and _has(clause, r"\bof the\b")
    )


def _direction(clause: str) -> str | None:
    words = _DIRECTION.findall(clause)
    if not words:
        return None
    word = re.sub(r"[- ]", "", words[-1])
    if word in ("anticlockwise", "counterclockwise"):
        return "counterclockwise"
    word = re.sub(r"wards?$", "", word)
    return _DIRECTION_NAMES.get(word, word)


def _step(clause: str) -> str | None:
    direction = _direction(clause)
    return direction if direction in STEPS else None


def _share(clause: str) -> float | None:
    """A share of the image (moves, pans, brightness): 25% -> 0.25, "a quarter" -> 0.25."""
    if match := _PERCENT.search(clause):
        return float(match[1]) / 100
    for words, value in FRACTIONS.items():
        if re.search(rf"\b{words}\b", clause):
            return value
    return None


def _factor(clause: str) -> float | None:
    """A zoom factor: "a factor of 1.5", "2x", "by 50%" (1.5)."""
    if match := _FACTOR.search(clause):
        return float(match[1] or match[2])
    if match := _PERCENT.search(clause):
        return 1 + float(match[1]) / 100
    return None


def _scale(clause: str, direction: str | None) -> float | None:
    """A size factor: "to 150% of its size" -> 1.5, "by 50%" -> 1.5 or 0.5, "half" -> 0.5."""
    if match := _PERCENT.search(clause):
        value = float(match[1]) / 100
        if re.search(r"\bby\s+(?:about |around |roughly |approximately )?\d", clause):
            return 1 + value if direction == "larger" else 1 - value
        return value
    if match := _FACTOR.search(clause):
        return float(match[1] or match[2])
    if _has(clause, r"\bhalf\b|\bhalve"):
        return 0.5
    if _has(clause, r"\btwice\b|\bdouble"):
        return 2.0
    return None


def _free(clause: str, pattern: str, mentions: list[Mention]) -> list[str]:
    """Words matching ``pattern`` outside every object mention and not right after "from"."""
    out = []
    for match in re.finditer(rf"\b(?:{pattern})\b", clause):
        inside = any(m.span[0] <= match.start() < m.span[1] for m in mentions if not m.pronoun)
        after_from = clause[: match.start()].rstrip().endswith("from")
        if not inside and not after_from:
            out.append(match[0])
    return out


def _target_colour(clause: str, mentions: list[Mention]) -> str | None:
    free = _free(clause, COLOUR, mentions)
    return _colour(free[-1]) if free else None


def _counts(clause: str) -> tuple[int | None, int | None, int | None]:
    """(from, to, by) as said: "from one to three", "to three", "add two more" (by two)."""
    if match := re.search(rf"\bfrom\s+({NUMBER})\s+to\s+({NUMBER})\b", clause):
        return _number(match[1]), _number(match[2]), None
    if match := re.search(rf"\bto\s+({NUMBER})\b", clause):
        return None, _number(match[1]), None
    if match := re.search(rf"\b({NUMBER})\s+(?:more|additional|extra|fewer|of the)\b", clause):
        return None, None, _number(match[1])
    if _has(clause, r"\banother\b"):
        return None, None, 1
    return None, None, None


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS[word]
