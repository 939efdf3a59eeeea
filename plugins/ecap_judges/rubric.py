"""The EditCaption judging rubric as data, with its deterministic rules applied in code.

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecap.records import Reference

RUBRIC_ID = "editcaption-v1"
#: Degree words that are vague in any context; verbs and references need the judge's reading.
ALWAYS_VAGUE = ("appropriate", "appropriately", "slightly", "a bit", "somewhat", "a little")
CLARITY_CEILINGS = {0: 5.0, 1: 3.0, 2: 2.5}  # 3 or more -> 2.0
COMPLETENESS_BANDS = ((1.0, 5.0), (0.75, 4.5), (0.60, 4.0), (0.50, 3.0), (0.20, 2.0))


class UnparsableAnswer(ValueError):
    """The judge's answer has no JSON object matching the axis' schema."""


# -- what the model is asked to return, per axis -------------------------------------------------


class ChangeCheck(BaseModel):
    change: int = Field(description="number of the primary change in the reference, from 1")
    status: Literal["hit", "partial", "miss"]


class AccuracyAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    assertions: list[str] = Field(default_factory=list)
    primary_changes: list[ChangeCheck]
    hallucination: bool = Field(
        description="the instruction asks for something that did not happen"
    )
    major_errors: int = Field(ge=0, description="wrong facts about the primary changes")
    minor_errors: int = Field(ge=0, description="wrong facts about unchanged or minor elements")
    score: float = Field(ge=1, le=5)
    reasoning: str


class CompletenessAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    primary_changes: list[ChangeCheck]
    secondary_covered: bool = Field(description="at least one secondary change is mentioned")
    score: float = Field(ge=1, le=5)
    reasoning: str


class ClarityAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    forbidden_terms: list[str] = Field(default_factory=list)
    missing_attributes: list[str] = Field(default_factory=list)
    score: float = Field(ge=1, le=5)
    reasoning: str


class FreeAnswer(BaseModel):
    """A user-defined axis: the model's score, clamped to the axis' range."""

    model_config = ConfigDict(extra="ignore")

    score: float
    reasoning: str


# -- deterministic rules -------------------------------------------------------------------------


def coverage(checks: list[ChangeCheck], total: int) -> float:
    """Share of the reference's ``total`` primary changes the instruction hits (partial = 0.5).
    Only checks numbered 1..total count, each once; a change the answer skips is a miss."""
    if total == 0:
        return 1.0
    by_change = {c.change: c.status for c in checks if 1 <= c.change <= total}
    hits = sum({"hit": 1.0, "partial": 0.5, "miss": 0.0}[s] for s in by_change.values())
    return hits / total


def accuracy_score(answer: AccuracyAnswer, reference: Reference, instruction: str) -> float:
    rate = coverage(answer.primary_changes, len(reference.primary))
    cap = 5.0
    if answer.hallucination or answer.major_errors >= 2:
        cap = 2.0
    elif answer.major_errors == 1 or rate < 0.30:
        cap = 3.0
    elif rate < 0.50 or answer.minor_errors > 0:
        cap = 4.0
    return max(1.0, min(float(round(answer.score)), cap))


def completeness_score(answer: CompletenessAnswer, reference: Reference, instruction: str) -> float:
    rate = coverage(answer.primary_changes, len(reference.primary))
    base = next((score for bound, score in COMPLETENESS_BANDS if rate >= bound), 1.0)
    if rate < 1.0 and answer.secondary_covered and reference.secondary:
        base += 0.5
    return min(base, 5.0)


def forbidden_terms(answer_terms: list[str], instruction: str) -> list[str]:
    """Vague terms actually present in the instruction: those the judge listed (when they occur)
    plus degree words that are vague in any context."""
    text = instruction.lower()
    found = {t.strip().lower() for t in answer_terms if t.strip() and _contains(text, t)}
    found |= {t for t in ALWAYS_VAGUE if _contains(text, t)}
    return sorted(found)


def clarity_score(answer: ClarityAnswer, reference: Reference, instruction: str) -> float:
    count = len(forbidden_terms(answer.forbidden_terms, instruction))
    ceiling = CLARITY_CEILINGS.get(count, 2.0)
    return max(1.0, min(answer.score, ceiling))


def _contains(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term.strip().lower())}(?![\w-])", text) is not None


RuleFn = Callable[[Any, Reference, str], float]
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

    def score(self, text: str, reference: Reference, instruction: str) -> tuple[float, BaseModel]:
        """Parse the model's answer and apply the axis' rule; raises UnparsableAnswer."""
        answer = parse_answer(text, self.answer_model())
        if self.rule in RULES:
            return RULES[self.rule][1](answer, reference, instruction), answer
        assert isinstance(answer, FreeAnswer)
        return max(self.min_score, min(answer.score, self.max_score)), answer


class Rubric(BaseModel):
    """A set of axes. S is the weighted sum of the axis scores, weights as given (the paper's sum
    to 1). Bump ``id`` whenever prompts or rules change: it is part of every cache key."""

    model_config = ConfigDict(extra="forbid")

    id: str = RUBRIC_ID
    axes: list[Axis]

    def weighted(self, scores: dict[str, float]) -> float:
        return round(sum(a.weight * scores[a.name] for a in self.axes), 4)


def parse_answer(text: str, model: type[BaseModel]) -> BaseModel:
    """The first JSON object in ``text`` that validates: bare, fenced, or inside chatty prose."""
    errors = []
    for candidate in _json_objects(text):
        try:
            return model.model_validate(candidate)
        except ValidationError as exc:
            errors.append(str(exc).splitlines()[0])
    detail = f" ({errors[0]})" if errors else ""
    raise UnparsableAnswer(f"no valid {model.__name__} in the answer{detail}: {text[:200]!r}")


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
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
