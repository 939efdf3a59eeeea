"""The Label Studio plugin without a server: committed export files, paths, configs, rules.

The files in tests/data/labelstudio/ are real Label Studio 1.23 exports (JSON and JSON_MIN) of
projects that ecap itself pushed, annotated by three users; make_exports.py there regenerates them
and writes malformed.json (refine.json plus one deliberate defect per added entry). Their images
are tests/data/labelstudio/images/, referenced as local files of a server whose document root was
tests/data/.

Who did what in them (task = pair number 0-3):

- refine: 0 corrected (needs_fix, 31.5 s), 1 accepted as it was, 2 skipped, 3 corrected by admin and
  later by bob;
- prefer (two candidates per pair): 0 picks B, 1 rewrites ("none"), 2 skipped, 3 a tie;
- evaluate: 0 correct, 1 P0 viewpoint+text (with a stale P1 tick and a comment), 2 P1 global,
  3 three annotators: P1 leakage (admin), correct (bob), P1 omission (carol, last).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from ecap import defects
from ecap.errors import EcapError
from ecap.interfaces import PluginContext
from ecap.records import ImageRef, Instruction, Item, Pair, SampleError, Verdict
from ecap.store import Store
from ecap.store.schema import RECORD_TABLES, ApiCall, SampleFailure
from ecap.testing import run_spec
from ecap_labelstudio.annotations import (
    Annotation,
    ExportedTask,
    Rejected,
    decide,
    read_export,
    resolve,
)
from ecap_labelstudio.configs import shipped
from ecap_labelstudio.source import NO_TASK, LabelStudioConfig, LabelStudioSource, Snapshot
from ecap_labelstudio.tasks import ImageLocations, ImagePathError, instruction_task, safe_join

DATA = Path(__file__).resolve().parent / "data" / "labelstudio"
USERS = {1: "admin@example.com", 2: "bob@example.com", 9: "carol@example.com"}


def settings(kind: str, file: str, **extra: Any) -> dict[str, Any]:
    return {
        "task": kind,
        "export_file": str(DATA / file),
        "document_root": str(DATA.parent),
        "images_root": str(DATA / "images"),
        "annotators": USERS,
        **extra,
    }


def run_source(write_spec, tmp_path: Path, kind: str, file: str, **extra: Any) -> Any:
    spec = write_spec(
        f"""
        name: migrate
        steps:
          old:
            source: label-studio
            max_error_rate: 1
            with: {json.dumps(settings(kind, file, **extra))}
        """
    )
    return run_spec(spec, store=f"sqlite:///{tmp_path / 'ecap.db'}")


def records(tmp_path: Path, record_type: str) -> list[Any]:
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    table = RECORD_TABLES[record_type]
    with store.engine.connect() as conn:
        ids = [r for (r,) in conn.execute(select(table.id).order_by(table.id))]
    found = store.records(record_type, ids)
    return [found[i] for i in ids]


def failures(tmp_path: Path) -> list[str]:
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    with store.engine.connect() as conn:
        return list(conn.execute(select(SampleFailure.message)).scalars())


# -- source: importing a project's export ---------------------------------------------------------


def test_a_refine_export_becomes_human_instructions_parented_to_the_models(write_spec, tmp_path):
    result = run_source(write_spec, tmp_path, "refine", "refine.json")
    assert result.status == "complete"
    assert result.steps["old"].counts["done"] == 4  # the skipped task is done, producing nothing

    instructions = records(tmp_path, "instruction")
    humans = {i.text: i for i in instructions if i.origin == "human"}
    models = {i.id: i for i in instructions if i.origin == "model"}
    assert set(humans) == {
        "Turn the ball of pair 0 blue.",
        "Make pair 1 bluer.",  # accepted as it was
        "Bob's fix of pair 3.",  # two annotators: the latest counts
    }
    fixed = humans["Turn the ball of pair 0 blue."]
    assert models[fixed.parent_id].text == "Make pair 0 bluer."
    exported = json.loads((DATA / "refine.json").read_text())
    assert fixed.parent_id == exported[0]["data"]["instruction_id"]  # the id ecap pushed
    assert fixed.author == "admin@example.com"
    assert fixed.meta["quality"] == "needs_fix" and fixed.meta["edited"] is True
    assert fixed.meta["label_studio"]["lead_time"] == 31.5
    assert fixed.meta["label_studio"]["created_at"].startswith("20")
    assert humans["Make pair 1 bluer."].meta["edited"] is False
    bob = humans["Bob's fix of pair 3."]
    assert bob.author == "bob@example.com"
    assert [a["annotator"] for a in bob.meta["label_studio"]["annotations"]] == [
        "admin@example.com",
        "bob@example.com",
    ]
    assert not any("pair 2" in i.text for i in humans.values())

    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    with store.engine.connect() as conn:
        audit = conn.execute(select(ApiCall.response)).scalars().all()
    skipped = [a for a in audit if a["export"]["annotations"][0]["was_cancelled"]]
    assert len(audit) == 4 and len(skipped) == 1  # the skip is recorded, with who and when
    assert skipped[0]["export"]["annotations"][0]["lead_time"] == 2.0


def test_json_min_and_json_exports_give_the_same_records(write_spec, tmp_path):
    run_source(write_spec, tmp_path / "json", "refine", "refine.json")
    run_source(write_spec, tmp_path / "min", "refine", "refine-min.json")
    full = {i.id: i.text for i in records(tmp_path / "json", "instruction")}
    minimal = {i.id: i.text for i in records(tmp_path / "min", "instruction")}
    assert minimal == {k: v for k, v in full.items() if "pair 2" not in v}  # JSON_MIN has no skips


def test_a_prefer_export_becomes_preferences(write_spec, tmp_path):
    run_source(write_spec, tmp_path, "prefer", "prefer.json")
    exported = {t["id"]: t["data"] for t in json.loads((DATA / "prefer.json").read_text())}
    picked, rewritten = (exported[t]["candidate_ids"] for t in sorted(exported)[:2])
    preferences = records(tmp_path, "preference")
    instructions = {i.id: i for i in records(tmp_path, "instruction")}
    rewrite = next(i for i in instructions.values() if i.origin == "human")
    # 'none' over two candidates: the rewrite's parent is the first one shown (option A).
    assert rewrite.text == "Add a red hat to pair 1." and rewrite.parent_id == rewritten[0]
    assert {(p.chosen_id, p.rejected_id) for p in preferences} == {
        (picked[1], picked[0]),  # B over A
        (rewrite.id, rewritten[0]),  # a rewrite over every candidate
        (rewrite.id, rewritten[1]),
    }  # the skipped task and the tie produce nothing
    assert all(p.chosen_id in instructions and p.rejected_id in instructions for p in preferences)
    assert {p.meta["chosen_text"] for p in preferences} == {"Edit the color image.", rewrite.text}


def test_an_evaluate_export_gives_the_reports_p0_p1_p2_rates(write_spec, tmp_path):
    from ecap.report import ReportOptions, build_report

    run_source(write_spec, tmp_path, "evaluate", "evaluate.json")
    verdicts = records(tmp_path, "verdict")
    assert {v.kind for v in verdicts} == {"human"}
    assert sorted(tuple(v.labels) for v in verdicts) == [
        (),
        ("P0:viewpoint", "P0:text"),  # the stale P1 tick under a P0 does not count
        ("P1:global",),
        ("P1:omission",),  # carol's, the latest of three
    ]
    p0 = next(v for v in verdicts if "P0:text" in v.labels)
    assert p0.judge == "human:admin@example.com"
    assert p0.reasons == {"comment": "left and right swapped"}
    assert p0.meta["grade"] == "P0"

    report = build_report(Store(f"sqlite:///{tmp_path / 'ecap.db'}"), ReportOptions(resamples=0))
    (cell,) = report.table("human_grades").rows
    assert cell.n == 4
    assert {rate: s.mean for rate, s in cell.values.items()} == {
        "correct": 25.0,
        "P0": 25.0,
        "P1": 50.0,
        "P2": 0.0,
    }


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("latest", [("P1:omission",)]),
        ("majority", [("P1:omission",)]),  # two of three say P1; the latest of them counts
        ("all", [("P1:leakage",), (), ("P1:omission",)]),
        ("agree", "annotators disagree"),
    ],
)
def test_resolution_rules_for_several_annotators(write_spec, tmp_path, rule, expected):
    run_source(write_spec, tmp_path, "evaluate", "evaluate.json", resolution=rule)
    task3 = json.loads((DATA / "evaluate.json").read_text())[3]["data"]["instruction_id"]
    labels = [tuple(v.labels) for v in records(tmp_path, "verdict") if v.instruction_id == task3]
    if isinstance(expected, str):
        assert labels == []
        (message,) = failures(tmp_path)
        assert expected in message and "bob@example.com" in message
    else:
        assert labels == expected


def test_min_annotations_leaves_thinner_tasks_unfinished(write_spec, tmp_path):
    run_source(write_spec, tmp_path, "evaluate", "evaluate.json", min_annotations=2)
    assert len(records(tmp_path, "verdict")) == 1  # only the task with three annotations


def test_malformed_entries_are_reported_one_by_one_and_nothing_else_is_lost(write_spec, tmp_path):
    result = run_source(write_spec, tmp_path, "refine", "malformed.json")
    assert result.steps["old"].counts["failed"] == 10
    assert len([i for i in records(tmp_path, "instruction") if i.origin == "human"]) == 3
    messages = failures(tmp_path)
    expected = [
        "entry 5: not a JSON object",
        "entry 6: neither a task",
        "task 9001: 'annotations' is not a list",
        "task 9002: annotation 46 by admin@example.com: unknown control 'no_such_control'",
        "task 9003: annotation 46 by admin@example.com: control 'refined' should give a "
        "textarea result, not 'choices'",
        "task 9004: annotation 46 by admin@example.com: 'excellent' is not a choice of 'quality'",
        "task 9005: cannot be matched to a pair: image path 'labelstudio/../../secret.png' "
        "contains '..'",
        "task 9006: cannot be matched to a pair: image path '/etc/passwd' is absolute",
        "task 9007: its images are not those of pair 0000",
        "task 9008: cannot be matched to a pair: cannot read",
    ]
    for text in expected:
        assert any(text in m for m in messages), (text, messages)


# -- annotate: pulling from an export file --------------------------------------------------------


def image(name: str) -> ImageRef:
    path = DATA / "images" / name
    data = path.read_bytes()
    return ImageRef(uri=str(path), sha256=hashlib.sha256(data).hexdigest(), format="PNG")


def pushed_item(number: int, instruction_id: str) -> Item:
    pair = Pair.of(image(f"{number}-source.png"), image(f"{number}-target.png"))
    text = f"Make pair {number} bluer."
    return Item(
        pair=pair,
        instruction=Instruction(id=instruction_id, pair_id=pair.id, text=text, origin="model"),
    )


def plugin(tmp_path: Path, file: str, **extra: Any) -> LabelStudioSource:
    config = LabelStudioConfig.model_validate(settings("refine", file, **extra))
    return LabelStudioSource(
        config, PluginContext(step_id="refine", base_dir=DATA, work_dir=tmp_path)
    )


def test_pull_reads_finished_tasks_from_an_export_file(tmp_path):
    exported = json.loads((DATA / "refine.json").read_text())
    items = [pushed_item(n, t["data"]["instruction_id"]) for n, t in enumerate(exported)]
    unknown = pushed_item(0, "01JUNKNOWNINSTRUCTION00000")
    results = plugin(tmp_path, "refine.json").pull(
        [(item, str(t["id"])) for item, t in zip(items, exported, strict=True)] + [(unknown, "?")]
    )
    done0, _, skipped, done3, pending = results
    assert isinstance(done0, list) and done0[0].instruction is not None
    assert done0[0].instruction.text == "Turn the ball of pair 0 blue."
    assert done0[0].instruction.parent_id == items[0].instruction.id  # type: ignore[union-attr]
    assert done0[0].reference is None and done0[0].pair == items[0].pair
    assert skipped == []  # finished, producing nothing
    assert isinstance(done3, list) and done3[0].instruction.author == "bob@example.com"  # type: ignore[union-attr]
    assert pending is None  # not in this export (yet): the step keeps waiting

    # JSON_MIN leaves skipped tasks out: they stay pending when pulled from such a file.
    minimal = plugin(tmp_path, "refine-min.json").pull([(items[2], "43"), (items[0], "41")])
    assert minimal[0] is None
    same = minimal[1]
    assert isinstance(same, list) and same[0].instruction is not None
    assert same[0].instruction.id == done0[0].instruction.id  # the same record, read twice
    assert same[0].instruction.text == done0[0].instruction.text


def test_pull_reports_an_image_outside_the_root_for_that_item_alone(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes((DATA / "images" / "0-source.png").read_bytes())
    item = pushed_item(0, "01JNOTPUSHEDBECAUSEOUTSIDE")
    moved = Pair.of(ImageRef(uri=str(outside), sha256="a" * 64), item.pair.target)
    item = Item(pair=moved, instruction=item.instruction.model_copy(update={"pair_id": moved.id}))  # type: ignore[union-attr]
    (error,) = plugin(tmp_path, "refine.json").pull([(item, "rejected: ...")])
    assert error is not None and not isinstance(error, list)
    assert error.error_type == "ImagePathError" and "outside images_root" in error.message


# -- images, configs, rules -----------------------------------------------------------------------


def test_image_paths_stay_inside_their_root(tmp_path):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    assert safe_join(root, "images/a.png") == (root / "images" / "a.png").resolve()
    for bad, why in [
        ("../secret.png", r"contains '\.\.'"),
        ("images/../../secret.png", r"contains '\.\.'"),
        ("/etc/passwd", "is absolute"),
        ("C:\\Windows\\win.ini", "is absolute"),
        ("images/link.png", "leads outside"),
        ("", "is absolute"),
    ]:
        with pytest.raises(ImagePathError, match=why):
            safe_join(root, bad)

    local = ImageLocations("local-files", root / "images", root, None)
    assert (
        local.url_for(str(root / "images" / "a b.png")) == "/data/local-files/?d=images/a%20b.png"
    )
    assert local.path_for("/data/local-files/?d=images/a%20b.png") == root / "images" / "a b.png"
    assert local.url_for("https://example.com/x.png") == "https://example.com/x.png"
    with pytest.raises(ImagePathError, match="outside images_root"):
        local.url_for(str(tmp_path / "secret.png"))
    with pytest.raises(ImagePathError, match=r"contains '\.\.'"):
        local.path_for("/data/local-files/?d=images/../../secret.png")
    served = ImageLocations("url", root / "images", None, "http://img.example/{path}")
    assert served.url_for(str(root / "images" / "x.png")) == "http://img.example/x.png"
    assert served.path_for("http://img.example/x.png") == root / "images" / "x.png"
    with pytest.raises(ImagePathError, match="only local-files URLs"):
        served.path_for("http://elsewhere.example/x.png")


def test_the_evaluate_config_is_the_papers_checklist_level_by_level():
    controls = shipped("evaluate").controls
    for level in ("P0", "P1", "P2"):
        codes = list(controls[level.lower()].choices.values())
        assert codes == [c for c in defects.ALL_CODES if c.startswith(level)]
    assert list(controls["verdict"].choices) == ["correct", "defective"]
    assert controls["comment"].type == "textarea"
    assert {n: c.type for n, c in shipped("refine").controls.items()} == {
        "refined": "textarea",
        "quality": "choices",
    }
    prefer = shipped("prefer")
    assert prefer.controls["best"].options_field == "options"


def test_choices_are_read_by_alias_or_by_displayed_value():
    config = shipped("evaluate")
    label = next(k for k, v in config.controls["p0"].choices.items() if v == "P0:viewpoint")
    task = {
        "id": 1,
        "data": {},
        "annotations": [
            {
                "id": 7,
                "result": [
                    {
                        "from_name": "verdict",
                        "type": "choices",
                        "value": {"choices": ["defective"]},
                    },
                    {"from_name": "p0", "type": "choices", "value": {"choices": [label]}},
                ],
            }
        ],
    }
    (read,) = read_export([task], config)
    assert isinstance(read, ExportedTask) and not read.problems
    (annotation,) = read.annotations
    assert annotation.values["p0"] == ["P0:viewpoint"] and not annotation.problems


def answer(**values: list[str]) -> Annotation:
    return Annotation(
        id="1", annotator="a", created_at=None, updated_at=None, lead_time=None, values=values
    )


def test_answers_that_say_nothing_usable_are_rejected():
    with pytest.raises(Rejected, match="'none' was chosen but no better instruction"):
        decide("prefer", answer(best=["none"]), ["x", "y"])
    with pytest.raises(Rejected, match="'tie' is not an option"):
        decide("prefer", answer(best=["tie"]), ["only one"])
    with pytest.raises(Rejected, match="no defect was ticked"):
        decide("evaluate", answer(verdict=["defective"]), ["x"])
    with pytest.raises(Rejected, match="codes of another severity"):
        decide("evaluate", answer(verdict=["defective"], p1=["P0:viewpoint"]), ["x"])
    with pytest.raises(Rejected, match="no corrected instruction although quality is 'needs_fix'"):
        decide("refine", answer(quality=["needs_fix"]), ["x"])
    accepted = decide("refine", answer(quality=["accurate"]), ["  Keep   it. "])
    assert accepted.text == "Keep it."


def test_bad_settings_fail_validation_with_the_field_named():
    with pytest.raises(ValidationError, match="controls: nope not a control of refine tasks"):
        LabelStudioConfig(task="refine", controls={"nope": "x"})
    with pytest.raises(ValidationError, match="image_url, a URL template containing"):
        LabelStudioConfig(images="url")
    with pytest.raises(ValidationError, match="fields: images not one of"):
        LabelStudioConfig(fields={"images": "x"})


def test_an_annotate_step_without_a_server_says_what_to_set(write_spec, tmp_path, monkeypatch):
    from ecap.testing import make_pairs

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    make_pairs(tmp_path, count=1)
    spec = write_spec(
        """
        name: no-server
        steps:
          pairs: {source: csv, with: {path: pairs.csv}}
          refine: {annotate: label-studio, from: pairs, with: {images_root: images}}
        """
    )
    result = run_spec(spec)
    assert result.steps["refine"].status == "failed"
    assert "document_root" in (result.steps["refine"].error or "")
    spec.write_text(
        spec.read_text().replace("images_root: images", "document_root: ., images_root: images")
    )
    result = run_spec(spec)
    assert "set url (or $LABEL_STUDIO_URL)" in (result.steps["refine"].error or "")


def test_a_source_step_needs_an_export_or_a_server(write_spec, tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    spec = write_spec("name: x\nsteps:\n  old: {source: label-studio, with: {task: evaluate}}\n")
    result = run_spec(spec)
    assert result.steps["old"].status == "failed"
    assert "set export_file (an export) or url (a server)" in (result.steps["old"].error or "")


def test_importing_the_plugin_loads_no_http_client():
    code = "import sys, ecap_labelstudio; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_records_are_the_same_whichever_way_an_annotation_is_read():
    refine = shipped("refine")
    full = read_export(json.loads((DATA / "refine.json").read_text()), refine)
    minimal = read_export(json.loads((DATA / "refine-min.json").read_text()), refine)
    first_full = next(t for t in full if getattr(t, "id", None) == "41")
    first_min = next(t for t in minimal if getattr(t, "id", None) == "41")
    assert first_full.annotations[0].values == first_min.annotations[0].values  # type: ignore[union-attr]


def test_tasks_carry_the_models_answer_as_a_prediction_in_the_configs_own_terms(tmp_path):
    images = tmp_path / "root" / "images"
    images.mkdir(parents=True)
    refs = []
    for name in ("s.png", "t.png"):
        (images / name).write_bytes((DATA / "images" / "0-source.png").read_bytes())
        refs.append(ImageRef(uri=str(images / name), sha256=name * 10))
    pair = Pair.of(*refs)
    instruction = Instruction(pair_id=pair.id, text="Swap them.", origin="model", author="vlm@1")
    judged = Verdict(
        pair_id=pair.id,
        instruction_id=instruction.id,
        judge="gemini",
        labels=["P1:leakage", "P0:viewpoint"],
    )
    locations = ImageLocations("local-files", images, tmp_path / "root", None)

    refine = instruction_task("refine", Item(pair=pair, instruction=instruction), locations)
    assert refine["data"]["source_image"] == "/data/local-files/?d=images/s.png"
    assert refine["predictions"][0]["model_version"] == "vlm@1"
    plain = Item(pair=pair, instruction=instruction)
    assert "predictions" not in instruction_task("evaluate", plain, locations)
    graded = instruction_task("evaluate", plain.model_copy(update={"verdict": judged}), locations)
    (prediction,) = graded["predictions"]
    assert prediction["model_version"] == "gemini"

    for kind, task in (("refine", refine), ("evaluate", graded)):
        exported = {
            "id": 1,
            "data": task["data"],
            "annotations": [{"id": 2, "result": task["predictions"][0]["result"]}],
        }
        (read,) = read_export([exported], shipped(kind))
        decision = decide(kind, read.annotations[0], [instruction.text])  # type: ignore[union-attr]
        if kind == "refine":
            assert decision.text == "Swap them."
        else:
            assert decision.codes == ("P0:viewpoint",)  # the P0 hides the judge's P1


def test_a_project_with_other_names_imports_through_controls_and_fields(write_spec, tmp_path):
    exported = json.loads((DATA / "refine.json").read_text())
    for task in exported:
        task["data"]["caption"] = task["data"].pop("instruction")
        del task["data"]["instruction_id"], task["data"]["pair_id"]  # not made by ecap
        for annotation in task["annotations"]:
            for result in annotation["result"]:
                if result["from_name"] == "refined":
                    result["from_name"] = "corrected_text"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(exported))
    spec = write_spec(
        f"""
        name: migrate
        steps:
          old:
            source: label-studio
            with: {
            json.dumps(
                {
                    **settings("refine", str(renamed)),
                    "controls": {"refined": "corrected_text"},
                    "fields": {"instruction": "caption"},
                }
            )
        }
        """
    )
    assert run_spec(spec, store=f"sqlite:///{tmp_path / 'ecap.db'}").status == "complete"
    instructions = records(tmp_path, "instruction")
    humans = sorted(i.text for i in instructions if i.origin == "human")
    assert humans == ["Bob's fix of pair 3.", "Make pair 1 bluer.", "Turn the ball of pair 0 blue."]
    models = {i.id: i for i in instructions if i.origin == "model"}
    assert all(i.parent_id in models for i in instructions if i.origin == "human")


# -- what a step outputs, and where its records come from ----------------------------------------


def step_outputs(tmp_path: Path, step: str) -> list[dict[str, str]]:
    from ecap.store.schema import SampleResult

    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    with store.engine.connect() as conn:
        rows = conn.execute(select(SampleResult.outputs)).scalars().all()
    return [refs for outputs in rows for refs in outputs]


def test_a_source_step_outputs_human_results_and_keeps_model_instructions_as_lineage(
    write_spec, tmp_path
):
    run_source(write_spec, tmp_path, "refine", "refine.json")
    instructions = {i.id: i for i in records(tmp_path, "instruction")}
    outputs = step_outputs(tmp_path, "old")
    assert len(outputs) == 3  # three human instructions; the needs_fix model text is not one
    assert all(instructions[o["instruction"]].origin == "human" for o in outputs)
    for output in outputs:  # the model instructions are stored: lineage resolves
        assert instructions[output["instruction"]].parent_id in instructions

    run_source(write_spec, tmp_path / "shown", "refine", "refine.json", output_shown=True)
    shown = step_outputs(tmp_path / "shown", "old")
    origins = sorted(i.origin for i in records(tmp_path / "shown", "instruction"))
    assert len(shown) == 6 and origins == ["human"] * 3 + ["model"] * 3  # asked for: both


@pytest.mark.parametrize(
    ("kind", "record_type"), [("prefer", "preference"), ("evaluate", "verdict")]
)
def test_json_and_json_min_exports_give_the_same_record_ids(
    write_spec, tmp_path, kind, record_type
):
    run_source(write_spec, tmp_path / "json", kind, f"{kind}.json")
    run_source(write_spec, tmp_path / "min", kind, f"{kind}-min.json")
    for name in (record_type, "instruction"):
        full = {r.id for r in records(tmp_path / "json", name)}
        minimal = {r.id for r in records(tmp_path / "min", name)}
        assert full and minimal == full, name  # skipped tasks of JSON produce no record either


def test_ids_of_instructions_known_only_by_their_text_do_not_depend_on_the_format(tmp_path):
    def shown_ids(file: str) -> set[str]:
        exported = json.loads((DATA / file).read_text())
        for task in exported:  # a project not made by ecap: no ids in the data
            data = task.get("data", task)
            data.pop("instruction_id", None)
        path = tmp_path / file
        path.write_text(json.dumps(exported))
        source = LabelStudioSource(
            LabelStudioConfig.model_validate(settings("refine", str(path))),
            PluginContext(step_id="old", base_dir=DATA, work_dir=tmp_path),
        )
        rows = [r for r in source.rows() if "task" in r.data]
        made = [i for out in source.load(rows) if isinstance(out, list) for i in out]
        return {i.instruction.parent_id for i in made if i.instruction}  # type: ignore[misc]

    full, minimal = shown_ids("refine.json"), shown_ids("refine-min.json")
    assert len(full) == 3 and minimal == full
    from ulid import ULID

    assert all(ULID.from_str(i).timestamp > 0 for i in full)  # the first annotation's time


def prefer_plugin(tmp_path: Path, context: PluginContext) -> LabelStudioSource:
    config = LabelStudioConfig.model_validate(settings("prefer", "prefer.json"))
    return LabelStudioSource(config, context)


def test_prefer_candidates_of_other_batches_come_from_the_store_never_made_up(tmp_path):
    task = json.loads((DATA / "prefer.json").read_text())[0]  # B picked over A
    a_id, b_id = task["data"]["candidate_ids"]
    pair = Pair.of(image("0-source.png"), image("0-target.png"))
    a, b = (
        Instruction(id=i, pair_id=pair.id, text=t, origin="model", author="vlm@2", candidate=n)
        for n, (i, t) in enumerate(zip((a_id, b_id), task["data"]["candidates"], strict=True))
    )
    stored = {b.id: b}
    context = PluginContext(
        step_id="prefer",
        base_dir=DATA,
        work_dir=tmp_path,
        records=lambda kind, ids: {
            i: stored[i] for i in ids if kind == "instruction" and i in stored
        },
    )
    (out,) = prefer_plugin(tmp_path, context).pull([(Item(pair=pair, instruction=a), "1")])
    assert isinstance(out, list)
    (chosen,) = out
    assert chosen.instruction == b  # the stored record itself: author, candidate, meta kept
    assert chosen.preference is not None and chosen.preference.rejected_id == a.id

    stored.clear()  # B is nowhere: the task fails, no record is invented
    lost = prefer_plugin(tmp_path, context).pull([(Item(pair=pair, instruction=a), "1")])
    assert isinstance(lost[0], SampleError) and lost[0].error_type == "UnknownCandidate"
    assert b_id in lost[0].message


def test_a_nul_byte_in_an_image_reference_fails_that_task_alone(write_spec, tmp_path):
    exported = json.loads((DATA / "refine.json").read_text())
    exported[0]["data"]["source_image"] = "/data/local-files/?d=labelstudio/images/0\x00.png"
    exported[1]["data"]["target_image"] = "labelstudio/images/1\x00-target.png"
    path = tmp_path / "nul.json"
    path.write_text(json.dumps(exported))
    result = run_source(write_spec, tmp_path, "refine", str(path))
    assert result.steps["old"].counts["failed"] == 2 and result.steps["old"].counts["done"] == 2
    assert all("NUL byte" in m for m in failures(tmp_path))
    local = ImageLocations("local-files", DATA / "images", DATA.parent, None)
    with pytest.raises(ImagePathError, match="not a usable path"):
        local.url_for(str(DATA / "images" / "a\x00.png"))


def test_a_local_files_reference_must_lead_into_images_root_not_just_the_document_root(tmp_path):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "private").mkdir()
    local = ImageLocations("local-files", root / "images", root, None)
    assert local.path_for("/data/local-files/?d=images/a.png") == root / "images" / "a.png"
    with pytest.raises(ImagePathError, match="outside images_root"):
        local.path_for("/data/local-files/?d=private/key.png")


def test_an_item_no_task_can_be_made_for_gets_a_short_id_and_fails_on_pull(tmp_path):
    source = plugin(tmp_path, "refine.json", images_root=str(DATA / "images"))
    deep = tmp_path / ("x" * 200) / ("y" * 200)
    deep.mkdir(parents=True)
    outside = deep / "outside.png"
    outside.write_bytes((DATA / "images" / "0-source.png").read_bytes())
    item = pushed_item(0, "01JNOTPUSHEDBECAUSEOUTSIDE")
    moved = Pair.of(ImageRef(uri=str(outside), sha256="a" * 64), item.pair.target)
    item = Item(pair=moved, instruction=item.instruction.model_copy(update={"pair_id": moved.id}))  # type: ignore[union-attr]
    source._server = Snapshot("refine", [])  # the project's tasks, as read from a server
    source._storage_ready = True
    assert source.push([item]) == [NO_TASK]  # the long reason is not squeezed into the id
    (error,) = source.pull([(item, NO_TASK)])
    assert isinstance(error, SampleError) and str(outside) in error.message


def test_under_latest_a_superseded_broken_annotation_no_longer_fails_the_task():
    def annotation(number: int, when: str, **values: list[str]) -> Annotation:
        return Annotation(
            id=str(number),
            annotator="a",
            created_at=when,
            updated_at=when,
            lead_time=None,
            values=values,
        )

    broken = annotation(1, "2026-01-01T00:00:00Z", quality=["needs_fix"])  # no correction
    fixed = annotation(2, "2026-01-02T00:00:00Z", quality=["needs_fix"], refined=["Fixed."])
    task = ExportedTask("7", {}, None, (broken, fixed))
    resolved = resolve("refine", task, ["orig"], "latest", 1)
    assert resolved is not None and [d.text for _, d in resolved.chosen] == ["Fixed."]
    with pytest.raises(Rejected, match="annotation 1 by a"):  # 'all' keeps it: it fails
        resolve("refine", task, ["orig"], "all", 1)
    truth = replace(annotation(3, "2025-12-31T00:00:00Z", quality=["accurate"]), ground_truth=True)
    judged = ExportedTask("7", {}, None, (broken, fixed, truth))  # a reviewer settles it
    settled = resolve("refine", judged, ["orig"], "agree", 1)
    assert settled is not None and [a.id for a, _ in settled.chosen] == ["3"]


def test_entries_that_match_no_item_are_reported_once_without_failing_others(tmp_path, caplog):
    exported = json.loads((DATA / "refine.json").read_text())
    items = [pushed_item(n, t["data"]["instruction_id"]) for n, t in enumerate(exported)]
    source = plugin(tmp_path, "malformed.json")
    with caplog.at_level("WARNING", logger="ecap.plugin"):
        results = source.pull([(item, "?") for item in items])
        source.pull([(items[0], "?")])
    assert isinstance(results[0], list) and results[0]  # a good task still imports
    summaries = [r.getMessage() for r in caplog.records if "match no item" in r.getMessage()]
    assert len(summaries) == 1 and "2 entries that are not tasks" in summaries[0]
    assert any("entry 5 of" in r.getMessage() for r in caplog.records)


def test_a_reused_project_must_hand_tasks_to_enough_annotators(tmp_path):
    source = plugin(tmp_path, "refine.json", min_annotations=3)
    project = {
        "id": 5,
        "title": "old",
        "maximum_annotations": 1,
        "parsed_label_config": {"refined": {"type": "TextArea"}, "quality": {"type": "Choices"}},
    }
    with pytest.raises(EcapError, match="hands each task to 1 annotator"):
        source._check_project(project)
    source._check_project({**project, "maximum_annotations": 3})


def test_serve_writes_credentials_for_their_owner_only_and_takes_no_token_flag(tmp_path):
    from click.testing import CliRunner

    from ecap_labelstudio.cli import serve
    from ecap_labelstudio.server import LocalServer, write_secret

    secret = tmp_path / "api-token"
    secret.write_text("old")
    secret.chmod(0o644)
    write_secret(secret, "s3cret")
    assert secret.read_text() == "s3cret" and secret.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "admin-password"
    write_secret(fresh, "pw")
    assert fresh.stat().st_mode & 0o777 == 0o600

    options = {o.name for o in serve.params}
    assert "token" not in options  # a flag's value would show in `ps`
    result = CliRunner().invoke(serve, ["--token", "x", "--document-root", str(tmp_path)])
    assert result.exit_code != 0 and "No such option" in result.output

    server = LocalServer(tmp_path / "data", venv=tmp_path / "no-venv")
    with pytest.raises(EcapError, match="install-server"):
        server.start()
    assert not (tmp_path / "data").exists() or (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def test_install_server_checks_the_installed_version(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ecap_labelstudio import cli

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "label-studio").write_text("")
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\necho 1.20.0\n")
    python.chmod(0o755)
    installs: list[str] = []
    monkeypatch.setattr(cli, "install", lambda target, version: installs.append(version) or target)
    same = CliRunner().invoke(cli.install_server, ["--venv", str(venv), "--version", "1.20.0"])
    assert "already installed" in same.output and installs == []
    other = CliRunner().invoke(cli.install_server, ["--venv", str(venv), "--version", "1.23.2"])
    assert "holds label-studio 1.20.0; replacing it" in other.output and installs == ["1.23.2"]
