"""``ecap report`` and the defect checklist: exact numbers on a store with known verdicts."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys

import pytest
from click.testing import CliRunner

from ecap import defects
from ecap.errors import EcapError
from ecap.records import ImageRef, Instruction, Pair, Record, Verdict
from ecap.report import ReportOptions
from ecap.report import build_report as build
from ecap.report.command import report_command
from ecap.report.render import render_csv, render_html, render_markdown
from ecap.report.stats import bootstrap_mean, generator, spearman
from ecap.store import Store


def build_report(store, **options):
    """The report over ``store`` with ``options`` as ``ecap report`` takes them."""
    for many in ("runs", "steps", "human_runs", "human_steps"):
        if many in options:
            options[many] = tuple(options[many])
    return build(store, ReportOptions(**options))


# -- the defect checklist ------------------------------------------------------------------------


def test_checklist_has_the_papers_eight_categories_and_severities():
    assert [c.id for c in defects.CHECKLIST] == [
        "text",
        "attribute",
        "omission",
        "viewpoint",
        "global",
        "leakage",
        "redundant",
        "other",
    ]
    assert [c.number for c in defects.CHECKLIST] == list(range(1, 9))
    severities = {c.id: c.severities for c in defects.CHECKLIST}
    assert severities["text"] == severities["attribute"] == severities["omission"] == ("P0", "P1")
    assert severities["viewpoint"] == ("P0",)
    assert severities["global"] == severities["leakage"] == ("P1",)
    assert severities["redundant"] == severities["other"] == ("P2",)
    assert len(defects.ALL_CODES) == 11
    assert all(defects.is_valid(c) for c in defects.ALL_CODES)


def test_codes_parse_normalize_and_reject():
    assert defects.normalize_code(" p0 : Viewpoint ") == "P0:viewpoint"
    assert defects.normalize_code("P1:6") == "P1:leakage"  # the checklist row number
    assert defects.code("P2", "7") == "P2:redundant"
    assert defects.validate_codes(["P0:4", "P0:viewpoint", "P1:text"]) == [
        "P0:viewpoint",
        "P1:text",
    ]
    for bad, why in [
        ("P2:text", "P0 or P1"),
        ("P0:global", "P1, not P0"),
        ("P3:other", "P0, P1 or P2"),
        ("P0:nonsense", "unknown defect category"),
        ("viewpoint", "not a defect code"),
    ]:
        with pytest.raises(defects.DefectCodeError, match=why):
            defects.parse_code(bad)
    assert not defects.is_valid("P1:redundant")


def test_grade_is_the_most_severe_defect_and_p0_hides_the_rest():
    assert defects.grade([]) == "correct"
    assert defects.grade(["P2:other"]) == "P2"
    assert defects.grade(["P2:other", "P1:global"]) == "P1"
    assert defects.grade(["P1:text", "P0:viewpoint", "P2:redundant"]) == "P0"
    assert defects.effective(["P1:text", "P0:viewpoint", "P2:redundant", "P0:4"]) == [
        "P0:viewpoint"
    ]
    assert defects.effective(["P2:other", "P1:global", "P1:leakage"]) == [
        "P1:global",
        "P1:leakage",
    ]
    assert [defects.usability(g) for g in ("correct", "P2", "P1", "P0")] == [3, 2, 1, 0]
    assert defects.worst(["correct", "P1", "P2"]) == "P1"
    with pytest.raises(defects.DefectCodeError):
        defects.grade(["P0:viewpoint", "P9:x"])


# -- statistics ----------------------------------------------------------------------------------


def test_spearman_matches_a_hand_computed_example_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; sxy = 4.5, sxx = 4.5, syy = 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1], [1]) is None


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    values = [1.0, 2.0, 2.0, 3.0, 5.0, 4.5, 4.0, 3.5]
    stat = bootstrap_mean(values, resamples=1000, rng=generator(7))
    assert stat.mean == pytest.approx(25 / 8) and stat.n == 8
    assert stat.low is not None and stat.high is not None
    assert stat.low < stat.mean < stat.high
    assert stat == bootstrap_mean(values, resamples=1000, rng=generator(7))
    assert stat != bootstrap_mean(values, resamples=1000, rng=generator(7, "another cell"))
    assert bootstrap_mean([], resamples=10, rng=generator(0)).mean is None
    assert bootstrap_mean([3.0, 3.0], resamples=10, rng=generator(0)).low == 3.0
    assert bootstrap_mean(values, resamples=0, rng=generator(0)).low is None


def test_both_resampling_paths_give_the_textbook_interval():
    rng = random.Random(1)
    few_levels = [float(rng.randint(1, 5)) for _ in range(20000)]  # drawn by level counts
    many_levels = [rng.random() * 4 + 1 for _ in range(2000)]  # drawn by index
    for values in (few_levels, many_levels):
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
        stat = bootstrap_mean(values, resamples=400, rng=generator(3))
        assert stat.low is not None and stat.high is not None
        half = 1.96 * sd / math.sqrt(n)
        assert stat.low == pytest.approx(mean - half, abs=0.25 * half)
        assert stat.high == pytest.approx(mean + half, abs=0.25 * half)


# -- a store with known verdicts -----------------------------------------------------------------


class Builder:
    """Writes records as steps of runs, the way the runner does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: dict[str, str] = {}

    def run(self, name: str) -> str:
        self.runs[name] = self.store.start_run(
            name=name,
            spec_path="spec.yaml",
            spec_text="steps: {}",
            spec_hash="0" * 64,
            ecap_version="test",
            plugins={},
        )
        return self.runs[name]

    def step(self, run: str, step_id: str, kind: str, records: list[Record]) -> str:
        step_run = self.store.start_step(
            run_id=self.runs[run],
            step_id=step_id,
            kind=kind,
            plugin="fake",
            plugin_version="1",
            package="tests",
            config={},
            step_key=f"ecap1:{run}:{step_id}",
        )
        self.store.save_batch(step_run, f"ecap1:{run}:{step_id}", step_id, [], [], records)
        self.store.finish_step(step_run, "complete", {"done": len(records)})
        return step_run


def a_pair(n: int, **meta: str) -> Pair:
    return Pair.of(
        ImageRef(uri=f"/img/{n}a.png", sha256=f"{n:064x}"),
        ImageRef(uri=f"/img/{n}b.png", sha256=f"{n + 1000:064x}"),
        meta=meta,
    )


def judged(vid: str, instruction: Instruction, a: float, c: float, clar: float) -> Verdict:
    s = round(0.4 * a + 0.4 * c + 0.2 * clar, 6)
    return Verdict(
        id=vid,
        pair_id=instruction.pair_id,
        instruction_id=instruction.id,
        judge="gemini:gemini-2.5-pro",
        axes={"accuracy": a, "completeness": c, "clarity": clar},
        reasons={"accuracy": "r", "completeness": "r", "clarity": "r"},
        weighted=s,
        meta={"rubric": "editcaption-v1"},
    )


def human(vid: str, instruction: Instruction, *labels: str, who: str = "alice") -> Verdict:
    return Verdict(
        id=vid,
        kind="human",
        judge=f"human:{who}",
        pair_id=instruction.pair_id,
        instruction_id=instruction.id,
        labels=list(labels),
    )


@pytest.fixture
def world(store_url: str) -> dict[str, object]:
    """Run r1: two benchmarks (eval400 from its step id, HQ-Edit from pair meta), captions by
    model-a (author set) and by step cap_b (no author), judge steps, and human grades.
    Run r2 re-judges model-a's eval400 instructions later."""
    store = Store(store_url)
    b = Builder(store)
    b.run("r1")
    evals = [a_pair(n) for n in range(1, 5)]
    hq = [a_pair(n, benchmark="HQ-Edit") for n in range(11, 13)]
    b.step("r1", "eval400", "source", list(evals))
    b.step("r1", "hq", "source", list(hq))
    a_eval = [
        Instruction(pair_id=p.id, text=f"edit {i}", origin="model", author="model-a")
        for i, p in enumerate(evals)
    ]
    a_hq = [
        Instruction(pair_id=p.id, text=f"hq {i}", origin="model", author="model-a")
        for i, p in enumerate(hq)
    ]
    b_eval = [Instruction(pair_id=p.id, text=f"b {i}", origin="model") for i, p in enumerate(evals)]
    b.step("r1", "cap_a", "caption", [*a_eval, *a_hq])
    b.step("r1", "cap_b", "caption", list(b_eval[:3]))
    i1, i2, i3, i4 = a_eval
    b.step(
        "r1",
        "judge",
        "judge",
        [
            judged("V01", i1, 5, 5, 5),  # superseded by V02 (same instruction, later id)
            judged("V02", i1, 1, 3, 2),  # S 2.0
            judged("V03", i2, 5, 4, 4.5),  # S 4.5
            judged("V04", i3, 4, 5, 4.5),  # S 4.5
            judged("V05", i4, 3, 3, 3),  # S 3.0
            judged("V06", a_hq[0], 4, 4, 4),  # S 4.0
            judged("V07", a_hq[1], 5, 5, 5),  # S 5.0
        ],
    )
    b.step(
        "r1", "judge_b", "judge", [judged(f"V1{k}", i, 3, 3, 3) for k, i in enumerate(b_eval[:3])]
    )
    b.step(
        "r1",
        "human",
        "annotate",
        [
            human("H01", i1, "P1:text", "P0:viewpoint"),  # P0 hides the P1
            human("H02", i2, "P0:attribute"),  # superseded by H03
            human("H03", i2, who="bob"),  # correct
            human("H04", i3, "P2:redundant"),  # P2
            human("H05", i4, "P1:leakage", "P2:other"),  # P1
            human("H06", b_eval[0], "P2:text"),  # invalid: text defects are P0 or P1
        ],
    )
    b.run("r2")
    b.step("r2", "judge", "judge", [judged(f"W0{k}", i, 4, 4, 4) for k, i in enumerate(a_eval)])
    return {"store": store, "url": store.url, "runs": b.runs, "a_eval": a_eval, "builder": b}


def by_key(cells, **keys):
    (found,) = [c for c in cells if all(c.keys[k] == v for k, v in keys.items())]
    return found


def test_scores_table_has_exact_means_n_and_intervals(world):
    report = build_report(world["store"], runs=[world["runs"]["r1"]])
    assert report.meta["judge"] == "gemini:gemini-2.5-pro"
    assert report.meta["models"] == ["cap_b", "model-a"]  # no author: the caption step's id
    assert report.meta["benchmarks"] == ["eval400", "HQ-Edit"]  # no meta: the import step's id

    a = report.table("scores").row(model="model-a", benchmark="eval400")
    assert a is not None and a.n == 4  # V01 superseded by V02
    assert a.values["S"].mean == pytest.approx(3.5)
    assert a.values["accuracy"].mean == pytest.approx(3.25)
    assert a.values["completeness"].mean == pytest.approx(3.75)
    assert a.values["clarity"].mean == pytest.approx(3.5)
    for stat in a.values.values():
        assert stat.n == 4
        assert stat.low is not None and stat.high is not None
        assert stat.low <= stat.mean <= stat.high
        assert stat.low < stat.high

    hq = report.table("scores").row(model="model-a", benchmark="HQ-Edit")
    assert hq is not None and hq.n == 2 and hq.values["S"].mean == pytest.approx(4.5)
    cap_b = report.table("scores").row(model="cap_b", benchmark="eval400")
    assert cap_b is not None and cap_b.n == 3
    assert (cap_b.values["S"].mean, cap_b.values["S"].low, cap_b.values["S"].high) == (
        3.0,
        3.0,
        3.0,
    )
    assert report.table("scores").row(model="cap_b", benchmark="HQ-Edit") is None
    assert report.table("ablation").rows == []  # one selection: nothing to compare
    assert any("1 older judge verdict" in n for n in report.notes)


def test_human_grades_rates_follow_the_hierarchy(world):
    report = build_report(world["store"])
    (cell,) = report.table("human_grades").rows
    assert (cell.keys["model"], cell.keys["benchmark"], cell.n) == ("model-a", "eval400", 4)
    for rate in ("correct", "P0", "P1", "P2"):
        stat = cell.values[rate]
        assert stat.mean == pytest.approx(25.0) and stat.n == 4
        assert stat.low is not None and stat.high is not None
        assert 0 <= stat.low <= 25.0 <= stat.high <= 100
    assert any("1 human verdict(s) with invalid defect codes" in n for n in report.notes)

    worst = build_report(world["store"], human="worst")
    (cell,) = worst.table("human_grades").rows
    assert cell.values["P0"].mean == pytest.approx(50.0)  # H02's P0 now counts for i2
    assert cell.values["correct"].mean == pytest.approx(0.0)


def test_agreement_is_spearman_between_s_and_human_usability(world):
    report = build_report(world["store"], runs=[world["runs"]["r1"]])
    # S: 2.0 (P0=0), 4.5 (correct=3), 4.5 (P2=2), 3.0 (P1=1) -> rho = 4.5 / sqrt(22.5)
    overall, model_a = report.table("agreement").rows
    assert (overall.keys["model"], overall.n) == ("all", 4)
    assert (model_a.keys["model"], model_a.n) == ("model-a", 4)
    assert overall.values["spearman"] == pytest.approx(4.5 / math.sqrt(22.5))
    assert model_a.values["spearman"] == pytest.approx(overall.values["spearman"])


def test_latest_verdict_per_instruction_wins_across_runs(world):
    report = build_report(world["store"])
    a = report.table("scores").row(model="model-a", benchmark="eval400")
    assert a is not None and a.n == 4
    assert a.values["S"].mean == pytest.approx(4.0)  # r2's re-judging is later
    assert any("5 older judge verdict" in n for n in report.notes)


def test_ablation_puts_labelled_runs_and_steps_side_by_side(world):
    r1, r2 = world["runs"]["r1"], world["runs"]["r2"]
    report = build_report(world["store"], runs=[f"before={r1}", f"after={r2[:12]}"])
    rows = [
        (c.keys["benchmark"], c.keys["selection"], c.keys["model"], c.n)
        for c in report.table("ablation").rows
    ]
    assert rows == [
        ("eval400", "before", "cap_b", 3),
        ("eval400", "before", "model-a", 4),
        ("eval400", "after", "model-a", 4),
        ("HQ-Edit", "before", "model-a", 2),
    ]
    assert by_key(report.table("ablation").rows, selection="after").values[
        "S"
    ].mean == pytest.approx(4.0)
    before = by_key(
        report.table("ablation").rows, selection="before", model="model-a", benchmark="eval400"
    )
    assert before.values["S"].mean == pytest.approx(3.5)

    steps = build_report(world["store"], runs=[r1], steps=["judge", "B=judge_b"])
    assert {(c.keys["selection"], c.keys["model"]) for c in steps.table("ablation").rows} == {
        ("judge", "model-a"),
        ("B", "cap_b"),
    }
    assert by_key(steps.table("ablation").rows, selection="B").values["S"].mean == pytest.approx(
        3.0
    )


def test_several_judges_need_a_choice(world):
    b = world["builder"]
    (i1, *_) = world["a_eval"]
    other = Verdict(
        pair_id=i1.pair_id,
        instruction_id=i1.id,
        judge="openai:gpt-4.1",
        axes={"accuracy": 1.0, "completeness": 1.0, "clarity": 1.0},
        weighted=1.0,
    )
    b.step("r2", "judge_openai", "judge", [other])
    with pytest.raises(EcapError, match="choose one with --judge"):
        build_report(world["store"])
    assert build_report(world["store"], judge="gemini").meta["judge"] == "gemini:gemini-2.5-pro"
    only = build_report(world["store"], judge="openai:gpt-4.1")
    assert [(c.keys["model"], c.n) for c in only.table("scores").rows] == [("model-a", 1)]
    with pytest.raises(EcapError, match="judges in the store"):
        build_report(world["store"], judge="claude")


def test_unknown_runs_and_steps_are_errors(world):
    with pytest.raises(EcapError, match="no run 'ZZZ'"):
        build_report(world["store"], runs=["ZZZ"])
    with pytest.raises(EcapError, match="did you mean 'judge_b'"):
        build_report(world["store"], steps=["judge_bb"])


def test_renderers(world):
    report = build_report(world["store"], runs=[world["runs"]["r1"], world["runs"]["r2"]])
    md = render_markdown(report)
    assert "| Model | eval400 S | eval400 Acc |" in md
    assert "## Human defect grades" in md and "## Ablation" in md
    assert "25.0% [" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    (s_cell,) = [
        r
        for r in rows
        if (r["table"], r["model"], r["benchmark"], r["metric"])
        == ("scores", "model-a", "HQ-Edit", "S")
    ]
    assert float(s_cell["mean"]) == pytest.approx(4.5) and s_cell["n"] == "2"
    assert {r["table"] for r in rows} == {"scores", "human_grades", "ablation", "agreement"}
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert page.count('<img src="data:image/png;base64,') == 3  # scores, human, ablation
    assert 'alt="Judge scores by model and benchmark chart"' in page
    assert "<script" not in page and "<link" not in page and 'src="http' not in page


def test_report_command(world, tmp_path):
    runner = CliRunner()
    store = ["--store", world["url"]]
    md = runner.invoke(report_command, [*store, "--run", world["runs"]["r1"]])
    assert md.exit_code == 0, md.output
    assert "# ecap report" in md.stdout and "gemini:gemini-2.5-pro" in md.stdout

    as_json = runner.invoke(report_command, [*store, "--json", "--seed", "3", "--resamples", "200"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["seed"] == 3 and data["resamples"] == 200
    (cell,) = [c for c in data["scores"] if (c["model"], c["benchmark"]) == ("model-a", "HQ-Edit")]
    assert cell["n"] == 2 and cell["S"]["mean"] == pytest.approx(4.5)
    again = runner.invoke(report_command, [*store, "--json", "--seed", "3", "--resamples", "200"])
    assert again.stdout == as_json.stdout  # same seed, same intervals

    csv_out = runner.invoke(report_command, [*store, "--format", "csv"])
    assert csv_out.stdout.startswith("table,selection,model,benchmark,metric,mean,ci_low,ci_high,n")

    page = tmp_path / "out" / "report.html"
    html = runner.invoke(report_command, [*store, "--format", "html", "-o", str(page)])
    assert html.exit_code == 0, html.output
    assert 'src="data:image/png;base64,' in page.read_text()

    steps = runner.invoke(
        report_command, [*store, "--step", "A=judge", "--step", "judge_b", "--json"]
    )
    assert {c["selection"] for c in json.loads(steps.stdout)["ablation"]} == {"A", "judge_b"}

    missing = runner.invoke(report_command, ["--store", str(tmp_path / "none.db")])
    assert missing.exit_code != 0


def test_html_without_matplotlib_names_the_extra(world, monkeypatch):
    from ecap.errors import MissingExtraError

    report = build_report(world["store"])
    render_markdown(report)  # text formats never need matplotlib
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"editcaption\[report\]"):
        render_html(report)


def test_verdicts_scored_with_other_weights_are_reported_apart_never_averaged(world):
    b = world["builder"]
    reweighted = []
    for k, instruction in enumerate(world["a_eval"]):
        verdict = judged(f"X0{k}", instruction, 5, 1, 1)
        weights = {"accuracy": 0.8, "completeness": 0.1, "clarity": 0.1}
        reweighted.append(
            verdict.model_copy(
                update={"weighted": 4.2, "meta": {"rubric": "editcaption-v1", "weights": weights}}
            )
        )
    b.step("r2", "judge_accuracy_first", "judge", reweighted)

    report = build_report(world["store"], steps=["judge", "judge_accuracy_first"])
    scores = report.table("scores")
    assert [c.key for c in scores.keys] == ["rubric", "model", "benchmark"]
    other = "editcaption-v1 (accuracy 0.8, clarity 0.1, completeness 0.1)"
    assert {r.keys["rubric"] for r in scores.rows} == {"editcaption-v1", other}
    (heavy,) = [r for r in scores.rows if r.keys["rubric"] == other]
    assert heavy.values["S"].mean == pytest.approx(4.2) and heavy.n == 4
    # each instruction's latest verdict counts once, under the rubric that scored it
    assert sum(r.n for r in scores.rows if r.keys["model"] == "model-a") == 6
    assert any("follow 2 rubrics" in n for n in report.notes)
    assert {r.keys["selection"] for r in report.table("ablation").rows} == {
        "judge",
        "judge_accuracy_first",
    }
    assert "| Rubric | Model |" in render_markdown(report)

    one = build_report(world["store"], steps=["judge_accuracy_first"])
    assert [c.key for c in one.table("scores").keys] == ["model", "benchmark"]


def test_report_sections_come_from_the_registry_in_their_order():
    from ecap.report.sections import section_classes

    names = list(section_classes())
    assert {"scores", "human_grades", "ablation", "agreement"} <= set(names)
    order = sorted(names, key=lambda n: section_classes()[n].order)
    assert order[:4] == ["scores", "human_grades", "ablation", "agreement"]


def test_terminal_format_prints_boxed_tables(world):
    result = CliRunner().invoke(
        report_command, ["--store", world["url"], "--format", "terminal", "--resamples", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "Judge scores by model and benchmark" in result.stdout
    assert "┃ Model" in result.stdout and "model-a" in result.stdout
