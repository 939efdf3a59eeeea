"""Keep rules shared by every filter: from stored scores to keep/drop decisions, and why.

A filter's ``score`` is the expensive part and is cached; deciding what to keep is a cheap query
over the stored scores, so a changed threshold never re-scores (the config field holding the rule
is a :func:`ecap.interfaces.decision_field`). Some rules need every score of the step at once
(top-k, top-p and percentile compare a score with the others), so the decision is made over the
whole population in one call.

**The API the runner calls.** A filter's ``decide(items)`` (:class:`ecap.interfaces.Filter`)
receives every scored item the step outputs, in any order, and returns one
:class:`~ecap.interfaces.KeepDecision` per item, in the same order. Filters built on this module
implement it as ``decide_items(self.config.keep, items, default_component=...)``, which in turn
calls the pure function::

    decide(rule, scored, default_component="score") -> list[KeepDecision]

where ``scored`` is a sequence of ``(Score, category)`` and ``category`` is the pair's category
(``None``: uncategorised, a group of its own). ``decide`` reads nothing but its arguments.

**Rules** (YAML shape in brackets; ``component`` defaults to the filter's main component):

- :class:`MinScore` ``{min_score: 6.5}``: keep a value ``>=`` the minimum.
- :class:`MaxScore` ``{max_score: 0}``: keep a value ``<=`` the maximum.
- :class:`TopK` ``{top_k: 100}``: keep the ``k`` best values of each category
  (``per_category: false``: of the whole step).
- :class:`TopP` ``{top_p: 0.7}``: keep the best ``ceil(p * n)`` of the ``n`` rows of each
  category (a share of rows, by rank).
- :class:`Percentile` ``{percentile: 30}``: keep values ``>=`` the ``q``-th percentile of the step
  (``per_category: true``: of the row's category), linear interpolation between closest ranks
  (numpy's default). Unlike top-p it is a threshold on values: every row tied at it is kept.
- :class:`Unflagged` ``{unflagged: [vague_terms, leak]}`` (or ``all``): drop a row whose named
  0/1 flag components are set; the reason quotes the flag's explanation from ``Score.meta``.
- :class:`Unique` ``{unique: text_hash}``: of rows sharing ``Score.meta[key]``, keep one.
- :class:`AllOf` ``{all_of: [...]}`` / :class:`AnyOf` ``{any_of: [...]}``: combinations. Each
  member rule is evaluated over the whole population on its own and the results are combined
  (so ``all_of: [top_k: 10, min_score: 6]`` keeps the top 10 that also score at least 6, never
  the next ones in line); a drop's reason lists the members that dropped it.

**Ties** are broken deterministically, never by the order the store returns rows in: among equal
values the row whose (pair id, instruction id, score id) sorts first wins. Top-k, top-p and unique
use this order; min, max and percentile treat equal values alike.

A score without the component a rule reads, or with a NaN there, is dropped with that reason:
a missing number is never taken as a pass.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .interfaces import KeepDecision
from .records import Item, Score

#: One scored row: its score and its pair's category (``None``: uncategorised).
Scored = tuple[Score, str | None]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Whether the rule compares a row with other rows (then it needs the whole population).
    population: ClassVar[bool] = False
    #: The mapping key that names the rule in a spec.
    key: ClassVar[str]

    def spec(self) -> dict[str, Any]:
        """The rule as a spec writes it: its key first, defaults left out."""
        fields = {name: getattr(self, name) for name in self.model_fields_set if name != self.key}
        data = {self.key: getattr(self, self.key), **dict(sorted(fields.items()))}
        return {
            k: [m.spec() for m in v] if k in ("all_of", "any_of") else v for k, v in data.items()
        }

    def describe(self) -> str:
        """The rule in one line of YAML flow style: ``{min_score: 6.5, component: overall}``."""
        return _flow(self.spec())


class _ComponentRule(_Rule):
    component: str | None = Field(
        None, description="the score component the rule reads (default: the filter's main one)"
    )


class MinScore(_ComponentRule):
    key: ClassVar[str] = "min_score"
    min_score: float = Field(description="keep rows whose component is at least this")


class MaxScore(_ComponentRule):
    key: ClassVar[str] = "max_score"
    max_score: float = Field(description="keep rows whose component is at most this")


class TopK(_ComponentRule):
    key: ClassVar[str] = "top_k"
    top_k: int = Field(ge=0, description="keep this many best rows")
    per_category: bool = Field(True, description="per pair category (false: of the whole step)")
    population: ClassVar[bool] = True


class TopP(_ComponentRule):
    key: ClassVar[str] = "top_p"
    top_p: float = Field(gt=0, le=1, description="keep this share of rows, best first")
    per_category: bool = Field(True, description="per pair category (false: of the whole step)")
    population: ClassVar[bool] = True


class Percentile(_ComponentRule):
    key: ClassVar[str] = "percentile"
    percentile: float = Field(ge=0, le=100, description="keep rows at or above this percentile")
    per_category: bool = Field(False, description="the percentile of the row's own category")
    population: ClassVar[bool] = True


class Unflagged(_Rule):
    key: ClassVar[str] = "unflagged"
    unflagged: list[str] | Literal["all"] = Field(
        description="0/1 flag components that drop a row when set (all: every component)"
    )


class Unique(_Rule):
    key: ClassVar[str] = "unique"
    unique: str = Field(description="Score.meta key (e.g. text_hash); rows sharing it keep one")
    population: ClassVar[bool] = True


class AllOf(_Rule):
    key: ClassVar[str] = "all_of"
    all_of: list[KeepRule] = Field(min_length=1, description="keep rows every rule keeps")


class AnyOf(_Rule):
    key: ClassVar[str] = "any_of"
    any_of: list[KeepRule] = Field(min_length=1, description="keep rows some rule keeps")


_RULES: dict[str, type[_Rule]] = {
    cls.key: cls
    for cls in (MinScore, MaxScore, TopK, TopP, Percentile, Unflagged, Unique, AllOf, AnyOf)
}


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _rule_key(value: Any) -> str | None:
    """Which rule a YAML mapping (or a rule) is: the first rule key it holds."""
    if isinstance(value, _Rule):
        return value.key
    if isinstance(value, dict):
        return next((k for k in _RULES if k in value), None)
    return None


#: Any keep rule; a mapping is told apart by its key (``min_score``, ``top_k``, ``all_of`` ...).
KeepRule = Annotated[
    Annotated[MinScore, Tag("min_score")]
    | Annotated[MaxScore, Tag("max_score")]
    | Annotated[TopK, Tag("top_k")]
    | Annotated[TopP, Tag("top_p")]
    | Annotated[Percentile, Tag("percentile")]
    | Annotated[Unflagged, Tag("unflagged")]
    | Annotated[Unique, Tag("unique")]
    | Annotated[AllOf, Tag("all_of")]
    | Annotated[AnyOf, Tag("any_of")],
    Discriminator(
        _rule_key,
        custom_error_type="keep_rule",
        custom_error_message=f"a keep rule needs one of the keys {', '.join(_RULES)}",
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()


def parse_rule(value: Any) -> KeepRule:
    """A rule from its YAML/JSON shape (what ``with: keep:`` holds)."""
    from pydantic import TypeAdapter

    return TypeAdapter(KeepRule).validate_python(value)


def needs_population(rule: _Rule) -> bool:
    """Whether deciding one row needs the other rows' scores too."""
    if isinstance(rule, AllOf):
        return any(needs_population(r) for r in rule.all_of)
    if isinstance(rule, AnyOf):
        return any(needs_population(r) for r in rule.any_of)
    return rule.population


def components(rule: _Rule, default_component: str) -> set[str]:
    """The score components ``rule`` reads (``unflagged: all`` reads none by name)."""
    if isinstance(rule, AllOf | AnyOf):
        members = rule.all_of if isinstance(rule, AllOf) else rule.any_of
        return set().union(*(components(r, default_component) for r in members))
    if isinstance(rule, _ComponentRule):
        return {rule.component or default_component}
    if isinstance(rule, Unflagged) and rule.unflagged != "all":
        return set(rule.unflagged)
    return set()


# -- deciding ---------------------------------------------------------------------------------

_KEPT = KeepDecision(keep=True)


def decide(
    rule: _Rule, scored: Sequence[Scored], default_component: str = "score"
) -> list[KeepDecision]:
    """One decision per ``(score, category)`` row, in order; see the module docstring."""
    return _DECIDERS[type(rule)](rule, list(scored), default_component)


def decide_items(
    rule: _Rule, items: Sequence[Item], default_component: str = "score"
) -> list[KeepDecision]:
    """:func:`decide` over a filter step's output items. An item without a score (never one a
    filter made) is dropped, saying so: nothing was measured that could keep it."""
    scored = [(item.score, item.pair.category) for item in items if item.score is not None]
    decided = iter(decide(rule, scored, default_component))
    return [
        next(decided)
        if item.score is not None
        else KeepDecision(keep=False, reason="the item has no score")
        for item in items
    ]


def breakdown(
    rule: _Rule, scored: Sequence[Scored], default_component: str = "score"
) -> dict[str, list[bool]]:
    """Which rows each part of ``rule`` keeps on its own: the members of a top-level ``all_of``
    (or the rule itself), with ``unflagged`` split into one part per flag. Keys are the parts as
    written in a spec; this is how ``ecap filter retune`` counts drops per rule."""
    members = rule.all_of if isinstance(rule, AllOf) else [rule]
    parts: dict[str, list[bool]] = {}
    for member in members:
        if isinstance(member, Unflagged):
            names = member.unflagged
            if names == "all":
                names = list(dict.fromkeys(name for score, _ in scored for name in score.values))
            for name in names:
                single = Unflagged(unflagged=[name])
                parts[single.describe()] = [
                    d.keep for d in decide(single, scored, default_component)
                ]
        else:
            parts[member.describe()] = [d.keep for d in decide(member, scored, default_component)]
    return parts


def _tiebreak(score: Score) -> tuple[str, str, str]:
    return (score.pair_id, score.instruction_id or "", score.id)


def _value(score: Score, component: str) -> float | str:
    """The component's value, or why there is none (a reason to drop the row)."""
    if component not in score.values:
        known = ", ".join(sorted(score.values)) or "none"
        return f"no {component!r} in the score (it has {known})"
    value = score.values[component]
    if math.isnan(value):
        return f"{component} is NaN"
    return value


def _threshold(
    rule: MinScore | MaxScore, scored: list[Scored], default_component: str
) -> list[KeepDecision]:
    component = rule.component or default_component
    decisions = []
    for score, _ in scored:
        value = _value(score, component)
        if isinstance(value, str):
            decisions.append(KeepDecision(keep=False, reason=value))
        elif isinstance(rule, MinScore) and value < rule.min_score:
            decisions.append(
                KeepDecision(keep=False, reason=f"{component} {value:g} < min {rule.min_score:g}")
            )
        elif isinstance(rule, MaxScore) and value > rule.max_score:
            decisions.append(
                KeepDecision(keep=False, reason=f"{component} {value:g} > max {rule.max_score:g}")
            )
        else:
            decisions.append(_KEPT)
    return decisions


def _groups(scored: list[Scored], per_category: bool) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index, (_, category) in enumerate(scored):
        groups[category if per_category else None].append(index)
    return groups


def _ranked(
    scored: list[Scored],
    component: str,
    per_category: bool,
    how_many: Callable[[int], int],
    label: Callable[[int, int], str],
) -> list[KeepDecision]:
    """Keep the ``how_many(n)`` best rows of each group; ties by :func:`_tiebreak`."""
    decisions: list[KeepDecision] = [_KEPT] * len(scored)
    for category, indices in _groups(scored, per_category).items():
        valued = []
        for index in indices:
            value = _value(scored[index][0], component)
            if isinstance(value, str):
                decisions[index] = KeepDecision(keep=False, reason=value)
            else:
                valued.append((-value, _tiebreak(scored[index][0]), index))
        valued.sort()
        keep = how_many(len(valued))
        where = f" of category {category!r}" if per_category else ""
        for rank, (_, _, index) in enumerate(valued):
            if rank >= keep:
                reason = f"{component} ranked {rank + 1} of {len(valued)}{where}; " + label(
                    keep, len(valued)
                )
                decisions[index] = KeepDecision(keep=False, reason=reason)
    return decisions


def _top_k(rule: TopK, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    return _ranked(
        scored,
        rule.component or default_component,
        rule.per_category,
        lambda n: min(rule.top_k, n),
        lambda keep, n: f"top_k keeps {rule.top_k}",
    )


def _top_p(rule: TopP, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    # ``ceil`` of a product that should be an integer must not round up on float noise.
    return _ranked(
        scored,
        rule.component or default_component,
        rule.per_category,
        lambda n: math.ceil(round(rule.top_p * n, 9)),
        lambda keep, n: f"top_p {rule.top_p:g} keeps {keep}",
    )


def percentile_of(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between the two
    closest ranks, as numpy's default method does."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _percentile(
    rule: Percentile, scored: list[Scored], default_component: str
) -> list[KeepDecision]:
    component = rule.component or default_component
    decisions: list[KeepDecision] = [_KEPT] * len(scored)
    for category, indices in _groups(scored, rule.per_category).items():
        values: dict[int, float] = {}
        for index in indices:
            value = _value(scored[index][0], component)
            if isinstance(value, str):
                decisions[index] = KeepDecision(keep=False, reason=value)
            else:
                values[index] = value
        if not values:
            continue
        cut = percentile_of(list(values.values()), rule.percentile)
        where = f" of category {category!r}" if rule.per_category else ""
        for index, value in values.items():
            if value < cut:
                reason = f"{component} {value:g} < percentile {rule.percentile:g}{where} ({cut:g})"
                decisions[index] = KeepDecision(keep=False, reason=reason)
    return decisions


def _unflagged(rule: Unflagged, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    decisions = []
    for score, _ in scored:
        names = list(score.values) if rule.unflagged == "all" else rule.unflagged
        reasons = score.meta.get("reasons", {}) if isinstance(score.meta, dict) else {}
        fired = []
        for name in names:
            value = _value(score, name)
            if isinstance(value, str):
                fired.append(value)
            elif value != 0:
                why = reasons.get(name)
                fired.append(f"{name}: {why}" if why else name)
        decisions.append(KeepDecision(keep=False, reason="; ".join(fired)) if fired else _KEPT)
    return decisions


def _unique(rule: Unique, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    decisions: list[KeepDecision] = [_KEPT] * len(scored)
    first: dict[Any, Score] = {}
    for index in sorted(range(len(scored)), key=lambda i: _tiebreak(scored[i][0])):
        score = scored[index][0]
        key = score.meta.get(rule.unique)
        if key is None:
            decisions[index] = KeepDecision(keep=False, reason=f"no {rule.unique!r} in the score")
            continue
        if key in first:
            kept = first[key]
            subject = kept.instruction_id or kept.pair_id
            decisions[index] = KeepDecision(
                keep=False, reason=f"duplicate ({rule.unique}) of {subject}"
            )
        else:
            first[key] = score
    return decisions


def _all_of(rule: AllOf, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    members = [decide(r, scored, default_component) for r in rule.all_of]
    out = []
    for row in zip(*members, strict=True):
        reasons = [d.reason for d in row if not d.keep]
        out.append(KeepDecision(keep=False, reason="; ".join(reasons)) if reasons else _KEPT)
    return out


def _any_of(rule: AnyOf, scored: list[Scored], default_component: str) -> list[KeepDecision]:
    members = [decide(r, scored, default_component) for r in rule.any_of]
    out = []
    for row in zip(*members, strict=True):
        if any(d.keep for d in row):
            out.append(_KEPT)
        else:
            out.append(KeepDecision(keep=False, reason=" and ".join(d.reason for d in row)))
    return out


_DECIDERS: dict[type[_Rule], Callable[[Any, list[Scored], str], list[KeepDecision]]] = {
    MinScore: _threshold,
    MaxScore: _threshold,
    TopK: _top_k,
    TopP: _top_p,
    Percentile: _percentile,
    Unflagged: _unflagged,
    Unique: _unique,
    AllOf: _all_of,
    AnyOf: _any_of,
}

__all__ = [
    "AllOf",
    "AnyOf",
    "KeepDecision",
    "KeepRule",
    "MaxScore",
    "MinScore",
    "Percentile",
    "Scored",
    "TopK",
    "TopP",
    "Unflagged",
    "Unique",
    "breakdown",
    "components",
    "decide",
    "decide_items",
    "needs_population",
    "parse_rule",
    "percentile_of",
]
