"""The EditCaption judging rubric as data, with its deterministic rules applied in code.

It lives in the core because two kinds of judge share it: the LLM judges (``ecap_judges``, which
add the prompts) and judges that compute the same facts by rule (``shapes-rules``), so both score
with one set of lookups, caps and weights.

The paper judges an instruction on three independent axes, each in its own call with the source
image, the target image, the structured reference and the instruction:

- Accuracy (1-5): facts only. Any hallucinated operation caps it at 2; two or more major errors cap
  it at 2; one major error, or covering under 30% of the primary changes, caps it at 3; covering
  under 50% caps it at 4; an error about an unchanged element caps it at 4.
- Completeness (1-5): recall of the primary changes, R = hits / N, looked up in a fixed table
  (100% -> 5.0, >=75% -> 4.5, >=60% -> 4.0, >=50% -> 3.0, >=20% -> 2.0, 0% -> 1.0), plus 0.5 when
  R < 100% and secondary changes are also covered. Never adjusted downwards.
- Clarity (1-5): executability without the target image. Forbidden vague terms cap it:
  one -> 3.0, two -> 2.5, three or more -> 2.0.

S = 0.4 Accuracy + 0.4 Completeness + 0.2 Clarity.

The model is asked for structured facts (which primary change was hit, which terms are vague, was
anything invented) and for its own score; the code then computes the lookup, the caps and the
weighting from those facts, so no answer can break a rule. Facts the code can check itself are
checked: N is the number of primary changes in the reference, not the model's count, and a
"forbidden term" the instruction does not contain is ignored.

Paper gap, our choice: the completeness table has no band for 0% < R < 20%; it scores 1.0, the
lowest band, since such an instruction misses (nearly) every primary change.

Where the paper's prompts and its worked tables disagree, the prompts (what its judge was given)
are followed by default and the tables' reading is an option (:class:`Scoring`): a vague mention
of a primary change ("change the dress style") is a full hit in the Completeness prompt and half a
hit in Table 8; the prompt adds 0.5 for covered secondary changes whenever R < 100%, Table 8 gives
no bonus at R = 0.

An answer is used only when it is unambiguous: exactly one distinct top-level JSON object, whose
fields have the declared types (``true`` is not the number 1, ``"3"`` is not 3); anything else is
refused with the field and the value that were wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ecap.records import Reference

from .terms import vague_terms_in

RUBRIC_ID = "editcaption-v2"
#: The paper's weights: S = 0.4 Accuracy + 0.4 Completeness + 0.2 Clarity.
PAPER_WEIGHTS = {"accuracy": 0.4, "completeness": 0.4, "clarity": 0.2}


def weighted(scores: dict[str, float], weights: dict[str, float] = PAPER_WEIGHTS) -> float:
    """S: the weighted sum of the axis scores, rounded as every verdict stores it."""
    return round(sum(weight * scores[name] for name, weight in weights.items()), 4)


CLARITY_CEILINGS = {0: 5.0, 1: 3.0, 2: 2.5}  # 3 or more -> 2.0
COMPLETENESS_BANDS = ((1.0, 5.0), (0.75, 4.5), (0.60, 4.0), (0.50, 3.0), (0.20, 2.0))


class UnparsableAnswer(ValueError):
    """The judge's answer is not exactly one JSON object matching the axis' schema."""


class Scoring(BaseModel):
    """How the rules read the paper where it is ambiguous; part of the judge step's settings."""

    model_config = ConfigDict(extra="forbid")

    reading: Literal["prompts", "tables"] = Field(
        "prompts",
        description="'prompts': the judge prompts' rules (the paper's judge); 'tables': the "
        "worked examples' (a vague mention is half a hit, no secondary bonus at R = 0)",
    )
    extra_vague_terms: list[str] = Field(
        default_factory=list,
        description="vague terms counted for the Clarity ceilings besides the paper's list",
    )


# -- what the model is asked to return, per axis -------------------------------------------------


def _whole_number(value: Any) -> Any:
    """A count written as 2.0 is the count 2; a boolean or 2.5 stays refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A count: an integer, never a boolean (strict), though 2.0 is read as 2.
Count = Annotated[int, BeforeValidator(_whole_number)]


class _Answer(BaseModel):
    """Strict types: ``true`` is not a score, ``"1"`` is not a count, ``1`` is not a boolean."""

    model_config = ConfigDict(extra="ignore", strict=True)


class ChangeCheck(_Answer):
    change: Count = Field(description="number of the primary change in the reference, from 1")
    status: Literal["hit", "partial", "miss"]


class AccuracyAnswer(_Answer):
    assertions: list[str] = Field(default_factory=list)
    primary_changes: list[ChangeCheck]
    hallucination: bool = Field(
        description="the instruction asks for something that did not happen"
    )
    major_errors: Count = Field(ge=0, description="wrong facts about the primary changes")
    minor_errors: Count = Field(ge=0, description="wrong facts about unchanged or minor elements")
    score: float = Field(ge=1, le=5)
    reasoning: str


class CompletenessAnswer(_Answer):
    primary_changes: list[ChangeCheck]
    secondary_covered: bool = Field(description="at least one secondary change is mentioned")
    score: float = Field(ge=1, le=5)
    reasoning: str


class ClarityAnswer(_Answer):
    forbidden_terms: list[str] = Field(default_factory=list)
    missing_attributes: list[str] = Field(default_factory=list)
    score: float = Field(ge=1, le=5)
    reasoning: str


class FreeAnswer(_Answer):
    """A user-defined axis: the model's score, clamped to the axis' range."""

    score: float
    reasoning: str


# -- deterministic rules -------------------------------------------------------------------------


def coverage(checks: list[ChangeCheck], total: int, partial: float = 0.5) -> float:
    """Share of the reference's ``total`` primary changes the instruction hits, a partial
    (vague) mention counting ``partial``. Only checks numbered 1..total count, each once; a change
    the answer skips is a miss."""
    if total == 0:
        return 1.0
    by_change = {c.change: c.status for c in checks if 1 <= c.change <= total}
    hits = sum({"hit": 1.0, "partial": partial, "miss": 0.0}[s] for s in by_change.values())
    return hits / total


def round_half_up(score: float) -> float:
    """The nearest whole score, halves going up (3.5 -> 4, 2.5 -> 3): never Python's
    half-to-even, which would send 2.5 down and 3.5 up."""
    return float(math.floor(score + 0.5))


def accuracy_score(
    answer: AccuracyAnswer, reference: Reference, instruction: str, scoring: Scoring
) -> float:
    """The model's score, a whole number as the paper's prompt asks (a half rounded up), under
    the caps its facts set."""
    rate = coverage(answer.primary_changes, len(reference.primary))
    cap = 5.0
    if answer.hallucination or answer.major_errors >= 2:
        cap = 2.0
    elif answer.major_errors == 1 or rate < 0.30:
        cap = 3.0
    elif rate < 0.50 or answer.minor_errors > 0:
        cap = 4.0
    return max(1.0, min(round_half_up(answer.score), cap))


def completeness_score(
    answer: CompletenessAnswer, reference: Reference, instruction: str, scoring: Scoring
) -> float:
    """The lookup table's score for R, plus the secondary-change bonus. The prompts count a vague
    mention as a hit and give the bonus whenever R < 100%; the tables count it as half a hit and
    give no bonus at R = 0."""
    tables = scoring.reading == "tables"
    rate = coverage(answer.primary_changes, len(reference.primary), 0.5 if tables else 1.0)
    base = next((score for bound, score in COMPLETENESS_BANDS if rate >= bound), 1.0)
    bonus_applies = rate < 1.0 and not (tables and rate == 0.0)
    if bonus_applies and answer.secondary_covered and reference.secondary:
        base += 0.5
    return min(base, 5.0)


def forbidden_terms(answer_terms: list[str], instruction: str, scoring: Scoring) -> list[str]:
    """The forbidden terms the instruction really contains (see :mod:`ecap.rubric.terms`)."""
    return vague_terms_in(instruction, answer_terms, scoring.extra_vague_terms)


def clarity_score(
    answer: ClarityAnswer, reference: Reference, instruction: str, scoring: Scoring
) -> float:
    count = len(forbidden_terms(answer.forbidden_terms, instruction, scoring))
    ceiling = CLARITY_CEILINGS.get(count, 2.0)
    return max(1.0, min(answer.score, ceiling))


RuleFn = Callable[[Any, Reference, str, Scoring], float]
RULES: dict[str, tuple[type[BaseModel], RuleFn]] = {
    "accuracy": (AccuracyAnswer, accuracy_score),
    "completeness": (CompletenessAnswer, completeness_score),
    "clarity": (ClarityAnswer, clarity_score),
}


# -- the rubric as data --------------------------------------------------------------------------


class Axis(BaseModel):
    """One judged dimension: its prompt, its weight in S, and the rule that scores it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    weight: float = Field(ge=0)
    prompt: str = Field(description="template; {reference} and {instruction} are filled in")
    rule: Literal["accuracy", "completeness", "clarity", "score"] = Field(
        "score",
        description="deterministic rule applied to the answer; 'score' takes the "
        "model's score clamped to [min_score, max_score]",
    )
    min_score: float = 1.0
    max_score: float = 5.0

    def answer_model(self) -> type[BaseModel]:
        return RULES[self.rule][0] if self.rule in RULES else FreeAnswer

    def answer_schema(self) -> dict[str, Any]:
        return _strict(self.answer_model().model_json_schema())

    def score(
        self,
        text: str,
        reference: Reference,
        instruction: str,
        scoring: Scoring | None = None,
    ) -> tuple[float, BaseModel]:
        """Parse the model's answer and apply the axis' rule; raises UnparsableAnswer."""
        answer = parse_answer(text, self.answer_model())
        if self.rule in RULES:
            rule = RULES[self.rule][1]
            return rule(answer, reference, instruction, scoring or Scoring()), answer
        assert isinstance(answer, FreeAnswer)
        return max(self.min_score, min(answer.score, self.max_score)), answer


class Rubric(BaseModel):
    """A set of axes. S is the weighted sum of the axis scores, weights as given (the paper's sum
    to 1). Bump ``id`` whenever prompts or rules change: it is part of every cache key."""

    model_config = ConfigDict(extra="forbid")

    id: str = RUBRIC_ID
    axes: list[Axis]

    def weighted(self, scores: dict[str, float]) -> float:
        return weighted(scores, {a.name: a.weight for a in self.axes})


def parse_answer(text: str, model: type[BaseModel]) -> BaseModel:
    """The answer's one JSON object (bare, fenced, or inside chatty prose), validated.

    Only top-level objects count: a nested object never stands in for an answer that is invalid
    as a whole. Two different objects ("score 5 ... corrected: score 2") are ambiguous and refused;
    the same object repeated is one answer."""
    objects: list[dict[str, Any]] = []
    for found in _top_level_objects(text):
        if found not in objects:
            objects.append(found)
    if not objects:
        raise UnparsableAnswer(f"no JSON object in the answer: {text[:200]!r}")
    if len(objects) > 1:
        raise UnparsableAnswer(
            f"the answer holds {len(objects)} different JSON objects, so which one is meant is "
            f"ambiguous: {text[:200]!r}"
        )
    try:
        return model.model_validate(objects[0])
    except ValidationError as exc:
        raise UnparsableAnswer(f"{model.__name__} refused: {_refusals(exc)}") from None


def _refusals(exc: ValidationError, shown: int = 3) -> str:
    """Each wrong field by name with the value refused and why, e.g. ``score: true (Input should
    be a valid number)``."""
    parts = []
    for error in exc.errors()[:shown]:
        field = ".".join(str(part) for part in error["loc"]) or "(answer)"
        if error["type"] == "missing":
            parts.append(f"{field}: missing")
        else:
            value = json.dumps(error["input"], default=str)
            value = value if len(value) <= 60 else value[:57] + "..."
            parts.append(f"{field}: {value} ({error['msg']})")
    more = len(exc.errors()) - shown
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _top_level_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object that is not inside another JSON value, in order."""
    decoder = json.JSONDecoder()
    found = []
    position = 0
    while position < len(text):
        start = min(
            (i for i in (text.find("{", position), text.find("[", position)) if i >= 0), default=-1
        )
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
        position = end
    return found


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline $defs and forbid extra keys: the subset of JSON Schema every provider accepts."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].split("/")[-1]])
            out = {k: resolve(v) for k, v in node.items() if k not in ("title", "description")}
            if out.get("type") == "object":
                out["additionalProperties"] = False
                out["required"] = list(out.get("properties", {}))
            return out
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def format_reference(reference: Reference) -> str:
    """The reference as the judge sees it: numbered primary and secondary changes, then the
    overall description."""
    primary = "\n".join(f"({i}) {c}" for i, c in enumerate(reference.primary, 1)) or "(none)"
    secondary = "\n".join(f"({i}) {c}" for i, c in enumerate(reference.secondary, 1)) or "(none)"
    return (
        f"[Primary changes]\n{primary}\n[Secondary changes]\n{secondary}\n"
        f"[Overall description]\n{reference.overall or '(none)'}"
    )
