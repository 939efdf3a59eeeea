"""``ecap filter retune``: what a different keep rule would keep, from stored scores alone.

A filter step stores every score it made; which rows pass is decided afterwards, from those
scores and the step's keep rule (:mod:`ecap.keep`). Retuning therefore calls no model: it reads
the scores of the step's latest run, decides with the rule that run used and with the new one,
and prints kept and dropped rows per category and per part of each rule. To apply the new rule,
write it in the spec (``with: keep: ...``) and run again: only the decisions are redone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from ..errors import EcapError
from .common import console, emit, json_option, open_store, store_option

#: Printed for pairs without a category.
NO_CATEGORY = "(none)"


@click.group("filter")
def group() -> None:
    """Filter steps: re-decide what to keep from stored scores, without re-scoring."""


@group.command()
@click.argument("step")
@click.option("--min-score", type=float, help="keep rows whose component is at least this")
@click.option("--max-score", type=float, help="keep rows whose component is at most this")
@click.option("--top-k", type=int, help="keep the k best rows (per category by default)")
@click.option("--top-p", type=float, help="keep this share of rows, best first")
@click.option("--percentile", type=float, help="keep rows at or above this percentile (0-100)")
@click.option("--component", help="the score component the rules above read")
@click.option(
    "--per-category/--whole-step",
    default=None,
    help="rank per pair category or over the whole step (top-k, top-p, percentile)",
)
@click.option("--rule", "rule_text", help="a whole keep rule in YAML, e.g. '{top_p: 0.7}'")
@click.option("--run", "run_id", help="the run whose step to read (default: the latest)")
@store_option
@json_option
def retune(
    step: str,
    min_score: float | None,
    max_score: float | None,
    top_k: int | None,
    top_p: float | None,
    percentile: float | None,
    component: str | None,
    per_category: bool | None,
    rule_text: str | None,
    run_id: str | None,
    store_ref: str | None,
    as_json: bool,
) -> None:
    """Kept and dropped rows of filter STEP under a new keep rule, next to the current one.

    Several options combine into one rule that keeps rows every part keeps (all_of). No model is
    called: the stored scores of the step's latest run are decided again.
    """
    new_rule = rule_from_options(
        min_score=min_score,
        max_score=max_score,
        top_k=top_k,
        top_p=top_p,
        percentile=percentile,
        component=component,
        per_category=per_category,
        rule_text=rule_text,
    )
    store = open_store(store_ref)
    try:
        report = retune_report(store, step, new_rule, run_id)
    finally:
        store.close()
    if as_json:
        emit(report, True)
        return
    print_report(report)


def rule_from_options(
    *,
    min_score: float | None = None,
    max_score: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    percentile: float | None = None,
    component: str | None = None,
    per_category: bool | None = None,
    rule_text: str | None = None,
) -> dict[str, Any]:
    """The keep rule (its YAML shape) the command-line options describe."""
    import yaml

    parts: list[dict[str, Any]] = []
    if rule_text is not None:
        parsed = yaml.safe_load(rule_text)
        if not isinstance(parsed, dict):
            raise EcapError(f"--rule must be a mapping such as '{{top_p: 0.7}}', not {rule_text!r}")
        parts.append(parsed)
    for key, value in (("min_score", min_score), ("max_score", max_score)):
        if value is not None:
            parts.append({key: value})
    for key, value in (("top_k", top_k), ("top_p", top_p), ("percentile", percentile)):
        if value is not None:
            ranked: dict[str, Any] = {key: value}
            if per_category is not None:
                ranked["per_category"] = per_category
            parts.append(ranked)
    if component is not None:
        for part in parts[1 if rule_text is not None else 0 :]:
            part["component"] = component
    if not parts:
        raise EcapError(
            "say which rule to try: --min-score, --max-score, --top-k, --top-p, --percentile "
            "or --rule"
        )
    return parts[0] if len(parts) == 1 else {"all_of": parts}


def retune_report(
    store: Any, step: str, new_rule: dict[str, Any], run_id: str | None = None
) -> dict[str, Any]:
    """Decisions of the current and the new rule over the step's stored scores, counted."""
    from ..report.filters import redecide
    from ..report.query import StepRunFact

    found = store.latest_step_run(step, run_id)
    if found is None:
        raise EcapError(f"no step {step!r} in {store.redacted_url}; run the pipeline first")
    step_run = StepRunFact.from_row(found)
    items = store.step_outputs(step_run.step_key)
    current = redecide(store, step_run, items)
    proposed = redecide(store, step_run, items, keep=new_rule)
    report: dict[str, Any] = {
        "step": step,
        "step_run": step_run.step_run_id,
        "plugin": step_run.plugin,
        "scored": len(items),
    }
    decisions = {}
    for name, decided in (("current", current), ("new", proposed)):
        decisions[name] = [d.keep for d in decided.decisions]
        by_category: dict[str, Counter[str]] = {}
        for item, decision in zip(items, decided.decisions, strict=True):
            category = item.pair.category or NO_CATEGORY
            by_category.setdefault(category, Counter())["kept" if decision.keep else "dropped"] += 1
        report[name] = {
            "rule": decided.rule.spec(),
            "kept": decided.kept,
            "dropped": len(items) - decided.kept,
            "by_category": {
                category: {"kept": counts["kept"], "dropped": counts["dropped"]}
                for category, counts in sorted(by_category.items())
            },
            "dropped_by": {part: kept.count(False) for part, kept in decided.parts().items()},
        }
    changed = zip(decisions["current"], decisions["new"], strict=True)
    report["changed"] = sum(a != b for a, b in changed)
    return report


def print_report(report: dict[str, Any]) -> None:
    current, new = report["current"], report["new"]
    console().print(
        f"[bold]{report['step']}[/bold] ({report['plugin']}, step run {report['step_run']}): "
        f"{report['scored']} scored rows, {report['changed']} decisions change"
    )
    console().print(f"current rule: {_flow(current['rule'])}")
    console().print(f"new rule:     {_flow(new['rule'])}")
    categories = sorted(set(current["by_category"]) | set(new["by_category"]))
    rows = []
    for category in categories:
        now = current["by_category"].get(category, {"kept": 0, "dropped": 0})
        then = new["by_category"].get(category, {"kept": 0, "dropped": 0})
        rows.append(
            {
                "category": category,
                "kept now": now["kept"],
                "dropped now": now["dropped"],
                "kept new": then["kept"],
                "dropped new": then["dropped"],
            }
        )
    rows.append(
        {
            "category": "all",
            "kept now": current["kept"],
            "dropped now": current["dropped"],
            "kept new": new["kept"],
            "dropped new": new["dropped"],
        }
    )
    emit(
        rows,
        False,
        columns=["category", "kept now", "dropped now", "kept new", "dropped new"],
        title="kept and dropped per category",
    )
    reasons = [
        {"rule": "now: " + part, "drops": count} for part, count in current["dropped_by"].items()
    ] + [{"rule": "new: " + part, "drops": count} for part, count in new["dropped_by"].items()]
    emit(reasons, False, columns=["rule", "drops"], title="rows each rule drops on its own")


def _flow(rule: dict[str, Any]) -> str:
    from ..keep import parse_rule

    return parse_rule(rule).describe()


__all__ = ["group", "retune", "retune_report", "rule_from_options"]
