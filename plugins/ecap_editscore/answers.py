"""Reading an EditScore answer: ``{"reasoning": "...", "score": [a, b]}``, on 0..score_range.

The checkpoints were trained to answer with that JSON object. Models wrap it in code fences, put
text around it, or break the JSON inside the reasoning (an unescaped quote); the score list is
still the model's own answer, so it is read from the span between the first ``{`` and the last
``}``, and when that is not valid JSON, from its ``"score": [a, b]`` part alone.

Anything else is an :class:`UnusableAnswer` that names the field and the value: no score at all,
not exactly two numbers, or a number outside 0..score_range. The upstream package answers such
cases with a random or a middle score; a guessed number would pass or fail a caption by chance,
so here the sample fails instead, with the reason, and the next run asks again.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
SCORE_LIST = re.compile(r'"score"\s*:\s*\[([^\[\]]*)\]')
REASONING = re.compile(r'"reasoning"\s*:\s*"(.*?)"\s*,\s*"score"', re.DOTALL)
SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"'})


class UnusableAnswer(ValueError):
    """An answer that gives no valid score; ``field`` and ``value`` say what was wrong."""

    def __init__(self, kind: str, field: str, value: Any, why: str) -> None:
        self.kind = kind
        self.field = field
        self.value = value
        super().__init__(f"{field}: {why} (got {_short(value)})")


@dataclass(frozen=True)
class Answer:
    reasoning: str
    scores: tuple[float, float]  # as answered, on 0..score_range


def parse_answer(text: str, score_range: int, field: str) -> Answer:
    """The two scores and the reasoning of one answer to the ``field`` prompt."""
    body = THINKING.sub("", text).strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise UnusableAnswer("UnparsableAnswer", field, text, "no JSON object in the answer")
    span = body[start : end + 1].translate(SMART_QUOTES)
    reasoning: Any
    try:
        data = json.loads(span)
    except json.JSONDecodeError:
        listed = SCORE_LIST.search(span)
        if listed is None:
            raise UnusableAnswer(
                "UnparsableAnswer", field, text, "neither valid JSON nor a score list"
            ) from None
        try:
            raw_scores = json.loads(f"[{listed.group(1)}]")
        except json.JSONDecodeError:
            raise UnusableAnswer(
                "UnparsableAnswer", f"{field}.score", listed.group(0), "not a list of numbers"
            ) from None
        found = REASONING.search(span)
        reasoning = found.group(1) if found else ""
    else:
        if not isinstance(data, dict) or "score" not in data:
            raise UnusableAnswer("UnparsableAnswer", field, span, 'no "score" in the answer')
        raw_scores, reasoning = data["score"], data.get("reasoning", "")
    scores = _two_scores(raw_scores, score_range, f"{field}.score")
    return Answer(reasoning=str(reasoning), scores=scores)


def _two_scores(value: Any, score_range: int, field: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise UnusableAnswer("UnparsableAnswer", field, value, "expected a list of two numbers")
    numbers = []
    for index, element in enumerate(value):
        number = _number(element)
        where = f"{field}[{index}]"
        if number is None:
            raise UnusableAnswer("UnparsableAnswer", where, element, "not a number")
        if not 0 <= number <= score_range:
            raise UnusableAnswer("OutOfRange", where, element, f"outside 0..{score_range}")
        numbers.append(number)
    return numbers[0], numbers[1]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= 160 else text[:157] + "...")


__all__ = ["Answer", "UnusableAnswer", "parse_answer"]
