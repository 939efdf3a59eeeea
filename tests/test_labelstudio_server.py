"""The Label Studio round trip against a real Label Studio server.

The suite starts one server for this module, on 127.0.0.1 with a free port and its data in a
temporary folder, from the virtual environment that `ecap labelstudio install-server` creates (the
server pins openai<2, so it cannot live in ecap's environment; .ci/run installs it). Without that
environment these tests are skipped, saying how to install it. To reuse a server you already run,
set ECAP_TEST_LABEL_STUDIO_URL, ..._TOKEN and ..._DOCUMENT_ROOT.

Annotations are submitted through the API exactly as the labelling UI submits them (result items
with ids and origins, lead time, skips as cancelled annotations), by several users; then the spec
runs again and the store is checked: refined instructions with lineage, preferences, P0/P1/P2 rates.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ecap.interfaces import PluginContext
from ecap.records import Instruction, Item, Preference, Verdict
from ecap.store import Store
from ecap.store.schema import ApiCall, ExternalTask, InstructionRow, SampleFailure
from ecap.testing import make_pairs, run_spec
from ecap_csv.source import CsvSource
from ecap_labelstudio.client import LabelStudioClient, LabelStudioError
from ecap_labelstudio.server import LocalServer, executable, venv_path
from ecap_labelstudio.source import LabelStudioConfig, LabelStudioSource

pytestmark = pytest.mark.labelstudio
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    token: str
    document_root: Path

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.url, self.token)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = os.environ.get("ECAP_TEST_LABEL_STUDIO_URL")
    if url:
        yield Server(
            url,
            os.environ["ECAP_TEST_LABEL_STUDIO_TOKEN"],
            Path(os.environ["ECAP_TEST_LABEL_STUDIO_DOCUMENT_ROOT"]),
        )
        return
    if executable() is None:
        pytest.skip(
            f"no Label Studio server in {venv_path()}: install it with "
            "`ecap labelstudio install-server` (.ci/run does)"
        )
    with LocalServer(tmp_path_factory.mktemp("label-studio")) as server:
        print(f"Label Studio started in {server.startup_seconds:.1f} s", file=sys.stderr)
        yield Server(server.url, server.token, server.document_root)


@dataclass
class Workspace:
    """A folder inside the server's document root with images, a spec and a store."""

    server: Server
    folder: Path
    project: str

    @property
    def store(self) -> Store:
        return Store(f"sqlite:///{self.folder / 'ecap.db'}")

    def spec(self, steps: str) -> Path:
        path = self.folder / "spec.yaml"
        path.write_text(f"name: human-loop-test\nsteps:\n{steps}")
        return path

    def with_block(self, task: str, **extra: Any) -> str:
        settings = {
            "task": task,
            "url": self.server.url,
            "project": self.project,
            "document_root": str(self.server.document_root),
            "images_root": "images",
            **extra,
        }
        return json.dumps(settings)

    def tasks(self, client: LabelStudioClient) -> list[dict[str, Any]]:
        project = client.projects(self.project)[0]["id"]
        return client.export(project)


@pytest.fixture
def workspace(label_studio: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The token reaches the plugin as a user's would: through $LABEL_STUDIO_API_KEY."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    name = f"t-{secrets.token_hex(4)}"
    folder = label_studio.document_root / name
    folder.mkdir(parents=True)
    yield Workspace(label_studio, folder, f"ecap test {name}")
    shutil.rmtree(folder, ignore_errors=True)


def annotate(
    client: LabelStudioClient,
    task: dict[str, Any],
    result: list[dict[str, Any]],
    *,
    user: int | None = None,
    lead_time: float = 5.0,
    skipped: bool = False,
    ground_truth: bool = False,
) -> None:
    """Submit an annotation the way the labelling UI does."""
    body: dict[str, Any] = {
        "result": [{"id": secrets.token_urlsafe(6), "origin": "manual", **r} for r in result],
        "lead_time": lead_time,
        "was_cancelled": skipped,
        "ground_truth": ground_truth,
        "draft_id": 0,
        "parent_prediction": None,
        "started_at": "2026-11-26T10:00:00Z",
    }
    if user is not None:
        body["completed_by"] = user
    client.create_annotation(task["id"], body)


def text(name: str, value: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "textarea", "value": {"text": [value]}}


def choice(name: str, *values: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": list(values)}}


def by_instruction(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["data"]["instruction"]: t for t in tasks}


# -- refine ---------------------------------------------------------------------------------------


def test_refine_round_trip_pushes_once_waits_and_imports_human_instructions(workspace):
    make_pairs(workspace.folder, count=6)
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv, instruction_origin: model}}}}
  refine: {{annotate: label-studio, from: pairs, with: {workspace.with_block("refine")}}}
  out: {{export: jsonl, from: refine, with: {{path: out/refined.jsonl}}}}
"""
    )
    first = run_spec(spec)
    assert first.status == "waiting"
    assert first.steps["refine"].status == "waiting"
    assert first.steps["refine"].counts["pending"] == 6
    assert first.steps["out"].status == "skipped"

    client = workspace.server.client()
    tasks = workspace.tasks(client)
    assert len(tasks) == 6
    task = tasks[0]
    assert task["data"]["ecap_task"] == "refine"
    assert {"pair_id", "instruction_id", "instruction"} <= set(task["data"])
    assert task["total_predictions"] == 1  # the model's text, pre-filled
    # The project's local-files storage lets the server serve the images to annotators.
    response = httpx.get(
        workspace.server.url + task["data"]["source_image"],
        headers={"Authorization": f"Token {workspace.server.token}"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"

    again = run_spec(spec)  # nobody annotated yet: nothing is pushed twice
    assert again.steps["refine"].status == "waiting"
    assert len(workspace.tasks(client)) == 6

    bob = client.create_user(f"bob-{secrets.token_hex(3)}@example.com")
    tasks = by_instruction(workspace.tasks(client))
    fix = [text("refined", "Turn the background of pair 0 blue."), choice("quality", "needs_fix")]
    annotate(client, tasks["Make pair 0 bluer."], fix, lead_time=42.5)
    annotate(client, tasks["Make pair 1 bluer."], [choice("quality", "accurate")])
    annotate(client, tasks["Make pair 2 bluer."], [], skipped=True)
    annotate(client, tasks["Make pair 3 bluer."], [choice("quality", "unusable")])
    annotate(
        client,
        tasks["Make pair 4 bluer."],
        [text("refined", "First try."), choice("quality", "needs_fix")],
    )
    time.sleep(0.05)
    annotate(
        client,
        tasks["Make pair 4 bluer."],
        [text("refined", "Bob's later fix."), choice("quality", "needs_fix")],
        user=bob,
    )
    annotate(client, tasks["Make pair 5 bluer."], [choice("no_such_control", "x")])

    done = run_spec(spec)
    refine = done.steps["refine"]
    assert refine.status == "complete", refine.error
    assert refine.counts["done"] == 5 and refine.counts["failed"] == 1
    assert done.steps["out"].status == "complete"

    store = workspace.store
    with store.engine.connect() as conn:
        humans = (
            conn.execute(select(InstructionRow).where(InstructionRow.origin == "human"))
            .mappings()
            .all()
        )
        failures = conn.execute(select(SampleFailure)).mappings().all()
        audit = conn.execute(select(ApiCall).where(ApiCall.provider == "label-studio")).all()
    texts = {h["text"]: h for h in humans}
    assert set(texts) == {
        "Turn the background of pair 0 blue.",
        "Make pair 1 bluer.",
        "Bob's later fix.",
    }
    fixed = store.record("instruction", texts["Turn the background of pair 0 blue."]["id"])
    assert isinstance(fixed, Instruction)
    parent = store.record("instruction", fixed.parent_id or "")
    assert isinstance(parent, Instruction)
    assert parent.origin == "model" and parent.text == "Make pair 0 bluer."
    assert fixed.author == "admin@example.com"
    meta = fixed.meta["label_studio"]
    assert meta["lead_time"] == 42.5 and meta["created_at"] and meta["annotator"]
    assert fixed.meta["quality"] == "needs_fix" and fixed.meta["edited"] is True
    accepted = store.record("instruction", texts["Make pair 1 bluer."]["id"])
    assert accepted is not None and accepted.meta["edited"] is False
    latest = store.record("instruction", texts["Bob's later fix."]["id"])
    assert latest is not None and latest.author.startswith("bob-")  # type: ignore[attr-defined]
    assert len(latest.meta["label_studio"]["annotations"]) == 2  # both annotators are kept
    assert store.edges(src=("instruction", fixed.id), dst=("instruction", parent.id))
    assert [f["error_type"] for f in failures] == ["AnnotationError"]
    assert "unknown control 'no_such_control'" in failures[0]["message"]
    assert len(audit) == 5  # every finished task's annotations, the skipped one included

    exported = [json.loads(line) for line in (workspace.folder / "out/refined.jsonl").open()]
    assert sorted(r["instruction"] for r in exported) == sorted(texts)
    assert {r["instruction_origin"] for r in exported} == {"human"}


def test_refine_refuses_images_outside_the_root_per_task(workspace):
    make_pairs(workspace.folder, count=3)
    outside = workspace.folder / "elsewhere"
    outside.mkdir()
    csv = workspace.folder / "pairs.csv"
    lines = csv.read_text().splitlines()
    (workspace.folder / "images/0-source.png").rename(outside / "0-source.png")
    lines[1] = lines[1].replace("images/0-source.png", "elsewhere/0-source.png")
    csv.write_text("\n".join(lines) + "\n")
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv, instruction_origin: model}}}}
  refine:
    annotate: label-studio
    from: pairs
    max_error_rate: 0.9
    with: {workspace.with_block("refine")}
"""
    )
    result = run_spec(spec)
    refine = result.steps["refine"]
    assert refine.counts["failed"] == 1 and refine.counts["pending"] == 2
    client = workspace.server.client()
    assert len(workspace.tasks(client)) == 2
    with workspace.store.engine.connect() as conn:
        failure = conn.execute(select(SampleFailure)).mappings().one()
        rejected = (
            conn.execute(
                select(ExternalTask.external_id).where(ExternalTask.external_id == "no-task")
            )
            .scalars()
            .all()
        )
    assert failure["error_type"] == "ImagePathError"
    assert "outside images_root" in failure["message"]
    assert len(rejected) == 1  # the reason is the sample's failure, never part of the id


def test_images_can_be_linked_by_url_instead_of_served_from_disk(workspace):
    make_pairs(workspace.folder, count=1)
    settings = workspace.with_block("refine", images="url", image_url="https://img.example/{path}")
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv}}}}
  refine: {{annotate: label-studio, from: pairs, with: {settings}}}
"""
    )
    assert run_spec(spec).steps["refine"].status == "waiting"
    client = workspace.server.client()
    (task,) = workspace.tasks(client)
    assert task["data"]["source_image"] == "https://img.example/0-source.png"
    assert client.local_storages(client.projects(workspace.project)[0]["id"]) == []


# -- prefer ---------------------------------------------------------------------------------------


def test_prefer_groups_candidates_per_pair_and_imports_preferences(workspace):
    make_pairs(workspace.folder, count=3)
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv}}}}
  sft: {{caption: fake, from: pairs, with: {{candidates: 2}}}}
  prefer:
    annotate: label-studio
    from: sft
    batch_size: 1  # each pull meets candidates of other batches: they come from the store
    with: {workspace.with_block("prefer")}
"""
    )
    first = run_spec(spec)
    assert first.steps["prefer"].counts["pending"] == 6
    client = workspace.server.client()
    tasks = workspace.tasks(client)
    assert len(tasks) == 3  # one task per pair, both candidates in it
    assert all(len(t["data"]["candidate_ids"]) == 2 for t in tasks)
    assert [o["value"] for o in tasks[0]["data"]["options"]] == ["A", "B", "tie", "none"]

    run_spec(spec)
    assert len(workspace.tasks(client)) == 3  # idempotent

    by_category = {t["data"]["candidates"][0].split()[2]: t for t in tasks}
    annotate(client, by_category["color"], [choice("best", "B", to="target")])
    written = [choice("best", "none", to="target"), text("rewrite", "Add a red hat.", to="target")]
    annotate(client, by_category["add"], written)
    annotate(client, by_category["remove"], [choice("best", "tie", to="target")])
    done = run_spec(spec)
    assert done.steps["prefer"].status == "complete", done.steps["prefer"].error

    store = workspace.store
    with store.engine.connect() as conn:
        rows = conn.execute(select(InstructionRow.id).where(InstructionRow.origin == "human"))
        human_ids = [r for (r,) in rows]
    assert len(human_ids) == 1
    rewrite = store.record("instruction", human_ids[0])
    assert isinstance(rewrite, Instruction) and rewrite.text == "Add a red hat."
    preferences = _preferences(store)
    color_ids = by_category["color"]["data"]["candidate_ids"]
    add_ids = by_category["add"]["data"]["candidate_ids"]
    pairs = {(p.chosen_id, p.rejected_id) for p in preferences}
    assert pairs == {
        (color_ids[1], color_ids[0]),  # B picked over A
        (rewrite.id, add_ids[0]),  # the rewrite beats every candidate
        (rewrite.id, add_ids[1]),
    }
    assert rewrite.parent_id == add_ids[0]  # 'none' picked: the first candidate shown
    assert all(p.meta["chosen_text"] and p.meta["rejected_text"] for p in preferences)


def _preferences(store: Store) -> list[Preference]:
    from ecap.store.schema import PreferenceRow

    with store.engine.connect() as conn:
        ids = [r for (r,) in conn.execute(select(PreferenceRow.id))]
    return [p for p in store.records("preference", ids).values() if isinstance(p, Preference)]


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_imports_human_grades_that_the_report_counts(workspace):
    from ecap.report import ReportOptions, build_report

    make_pairs(workspace.folder, count=5)
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv, instruction_origin: model}}}}
  grade:
    annotate: label-studio
    from: pairs
    with: {workspace.with_block("evaluate", resolution="majority", min_annotations=1)}
"""
    )
    assert run_spec(spec).steps["grade"].status == "waiting"
    client = workspace.server.client()
    tasks = by_instruction(workspace.tasks(client))
    carol = client.create_user(f"carol-{secrets.token_hex(3)}@example.com")
    annotate(client, tasks["Make pair 0 bluer."], [choice("verdict", "correct")])
    # P0 ticked: the P1 list was hidden, so the stale P1 tick does not count.
    annotate(
        client,
        tasks["Make pair 1 bluer."],
        [
            choice("verdict", "defective"),
            choice("p0", "P0:viewpoint", "P0:text"),
            choice("p1", "P1:leakage"),
            text("comment", "left and right are swapped"),
        ],
    )
    annotate(
        client,
        tasks["Make pair 2 bluer."],
        [choice("verdict", "defective"), choice("p1", "P1:global")],
    )
    annotate(
        client,
        tasks["Make pair 3 bluer."],
        [choice("verdict", "defective"), choice("p2", "P2:redundant")],
    )
    # Two of three annotators say P1: the majority rule keeps the latest of them.
    annotate(
        client,
        tasks["Make pair 4 bluer."],
        [choice("verdict", "defective"), choice("p1", "P1:leakage")],
    )
    annotate(client, tasks["Make pair 4 bluer."], [choice("verdict", "correct")], user=carol)
    annotate(
        client,
        tasks["Make pair 4 bluer."],
        [choice("verdict", "defective"), choice("p1", "P1:omission")],
        user=carol,
    )
    done = run_spec(spec)
    assert done.steps["grade"].status == "complete", done.steps["grade"].error

    store = workspace.store
    from ecap.store.schema import VerdictRow

    with store.engine.connect() as conn:
        ids = [r for (r,) in conn.execute(select(VerdictRow.id))]
    verdicts = [v for v in store.records("verdict", ids).values() if isinstance(v, Verdict)]
    assert len(verdicts) == 5 and {v.kind for v in verdicts} == {"human"}
    labels = sorted(tuple(v.labels) for v in verdicts)
    assert labels == sorted(
        [(), ("P0:viewpoint", "P0:text"), ("P1:global",), ("P2:redundant",), ("P1:omission",)]
    )
    p0 = next(v for v in verdicts if v.labels and v.labels[0].startswith("P0"))
    assert p0.judge == "human:admin@example.com"
    assert p0.reasons == {"comment": "left and right are swapped"}
    assert p0.instruction_id is not None

    report = build_report(store, ReportOptions(resamples=0))
    (cell,) = report.table("human_grades").rows
    assert cell.n == 5
    rates = {rate: stat.mean for rate, stat in cell.values.items()}
    assert rates == {"correct": 20.0, "P0": 20.0, "P1": 40.0, "P2": 20.0}


def test_evaluate_requires_agreement_when_asked(workspace):
    make_pairs(workspace.folder, count=1)
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv, instruction_origin: model}}}}
  grade:
    annotate: label-studio
    from: pairs
    max_error_rate: 1
    with: {workspace.with_block("evaluate", resolution="agree", min_annotations=2)}
"""
    )
    run_spec(spec)
    client = workspace.server.client()
    (project,) = client.projects(workspace.project)
    assert client.project(project["id"])["maximum_annotations"] == 2  # two people get each task
    (task,) = workspace.tasks(client)
    annotate(client, task, [choice("verdict", "correct")])
    assert run_spec(spec).steps["grade"].counts["pending"] == 1  # one of two annotations
    dave = client.create_user(f"dave-{secrets.token_hex(3)}@example.com")
    annotate(client, task, [choice("verdict", "defective"), choice("p2", "P2:other")], user=dave)
    disagreed = run_spec(spec).steps["grade"]
    assert disagreed.counts["failed"] == 1
    with workspace.store.engine.connect() as conn:
        message = conn.execute(select(SampleFailure.message)).scalars().first()
    assert message is not None and "annotators disagree" in message
    # A reviewer's ground-truth annotation settles it on the next run.
    annotate(client, task, [choice("verdict", "correct")], ground_truth=True)
    settled = run_spec(spec).steps["grade"]
    assert settled.status == "complete" and settled.counts["done"] == 1


# -- the server's side of things ------------------------------------------------------------------


def test_a_wrong_token_fails_the_step_with_a_clear_message(workspace):
    make_pairs(workspace.folder, count=1)
    settings = json.loads(workspace.with_block("refine"))
    settings["api_key"] = "not-a-valid-token"
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv}}}}
  refine: {{annotate: label-studio, from: pairs, with: {json.dumps(settings)}}}
"""
    )
    result = run_spec(spec)
    assert result.steps["refine"].status == "failed"
    assert "refused the API token" in (result.steps["refine"].error or "")
    with workspace.store.engine.connect() as conn:
        stored = conn.execute(select(ExternalTask)).all()
    assert stored == []


def test_a_project_made_for_another_task_is_not_reused(workspace):
    make_pairs(workspace.folder, count=1)
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv}}}}
  refine: {{annotate: label-studio, from: pairs, with: {workspace.with_block("refine")}}}
  grade: {{annotate: label-studio, from: pairs, with: {workspace.with_block("evaluate")}}}
"""
    )
    result = run_spec(spec)  # both steps name the same project
    assert result.steps["refine"].status == "waiting"
    assert result.steps["grade"].status == "failed"
    assert "has no choices control named 'verdict'" in (result.steps["grade"].error or "")


def test_the_api_key_never_reaches_the_store(workspace):
    make_pairs(workspace.folder, count=1)
    settings = workspace.with_block("refine").replace(
        "{", '{"api_key": "${env:LABEL_STUDIO_API_KEY}", ', 1
    )
    spec = workspace.spec(
        f"""
  pairs: {{source: csv, with: {{path: pairs.csv}}}}
  refine: {{annotate: label-studio, from: pairs, with: {settings}}}
"""
    )
    run_spec(spec)
    dump = "\n".join(workspace.store.engine.raw_connection().iterdump())  # type: ignore[attr-defined]
    assert workspace.server.token not in dump


# -- the example ----------------------------------------------------------------------------------


def test_the_human_loop_example_closes_with_the_simulated_annotator(label_studio, monkeypatch):
    from ecap.report import ReportOptions, build_report

    folder = label_studio.document_root / f"example-{secrets.token_hex(4)}"
    shutil.copytree(
        REPO / "examples/human-loop",
        folder / "human-loop",
        ignore=shutil.ignore_patterns("out", "*.db*"),
    )
    shutil.copytree(REPO / "examples/quickstart/data", folder / "quickstart/data")
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.document_root),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = folder / "human-loop/spec.yaml"
    try:
        first = run_spec(spec)
        assert first.status == "waiting"
        assert {s: first.steps[s].counts["pending"] for s in ("refine", "correct", "grade")} == {
            "refine": 6,
            "correct": 6,
            "grade": 6,
        }
        assert first.steps["sft_data"].status == "skipped"

        script = subprocess.run(
            [sys.executable, str(folder / "human-loop/simulated_annotator.py")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        assert script.stdout.count("[SIMULATED]") == 18

        done = run_spec(spec)
        assert done.status == "complete", {s: o.error for s, o in done.steps.items()}
        refined = [json.loads(line) for line in (folder / "human-loop/out/refined.jsonl").open()]
        assert len(refined) == 5
        assert {r["instruction_author"] for r in refined} == {"simulated-annotator@example.com"}
        store = Store(f"sqlite:///{folder / 'human-loop/ecap.db'}")
        assert len(_preferences(store)) == 2
        (cell,) = build_report(store, ReportOptions(resamples=0)).table("human_grades").rows
        rates = {rate: round(stat.mean or 0, 1) for rate, stat in cell.values.items()}
        assert rates == {"correct": 50.0, "P0": 16.7, "P1": 16.7, "P2": 16.7}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- push, directly -------------------------------------------------------------------------------


def _plugin(workspace: Workspace, task: str) -> LabelStudioSource:
    config = LabelStudioConfig.model_validate(json.loads(workspace.with_block(task)))
    return LabelStudioSource(
        config, PluginContext(step_id=task, base_dir=workspace.folder, work_dir=workspace.folder)
    )


def _items(workspace: Workspace, count: int) -> list[Item]:
    make_pairs(workspace.folder, count=count)
    plugin = CsvSource(
        CsvSource.Config(path="pairs.csv", instruction_origin="model"),
        PluginContext(step_id="pairs", base_dir=workspace.folder, work_dir=workspace.folder),
    )
    loaded = plugin.load(list(plugin.rows()))
    return [item for items in loaded if isinstance(items, list) for item in items]


def test_the_shapes_annotator_works_through_label_studio_as_its_own_simulated_user(workspace):
    """ShapesEdit's simulated annotator, routed through the server: tasks in label-studio's
    format, answered there through the API, read back as people's answers are."""
    from ecap_shapes.annotator import reference_instruction
    from ecap_shapes.label_studio import SIMULATED_USER

    def routed(task: str) -> str:
        settings = json.loads(workspace.with_block(task))
        del settings["task"]
        settings["project"] = f"{workspace.project} {task}"
        return json.dumps({"task": task, "label_studio": settings})

    spec = workspace.spec(
        f"""
  pairs:
    source: shapes
    with: {{count: 4, seed: 3, split: train, image_size: 48, output_dir: images,
            operations: [move, background], min_objects: 1, max_objects: 2}}
  captions: {{caption: fake, from: pairs, with: {{template: "Edit the {{category}} image."}}}}
  refined: {{annotate: shapes-annotator, from: captions, with: {routed("refine")}}}
  graded: {{annotate: shapes-annotator, from: captions, with: {routed("evaluate")}}}
  corrected: {{annotate: shapes-annotator, from: captions, with: {routed("prefer")}}}
"""
    )
    result = run_spec(spec)  # answered as soon as pushed: no wait for people
    assert result.status == "complete", {k: v.error for k, v in result.steps.items()}

    client = workspace.server.client()
    project = client.projects(f"{workspace.project} refine")[0]["id"]
    tasks = client.export(project)
    assert len(tasks) == 4 and {t["data"]["ecap_task"] for t in tasks} == {"refine"}
    users = client.users()
    assert {users[a["completed_by"]] for t in tasks for a in t["annotations"]} == {SIMULATED_USER}

    items = workspace.store.step_outputs(workspace.store.latest_step_run("refined")["step_key"])
    assert len(items) == 4
    for item in items:
        assert item.instruction is not None and item.instruction.origin == "human"
        assert item.instruction.author == SIMULATED_USER  # labelled simulated in provenance
        assert item.instruction.text == reference_instruction(item)
        assert str(item.instruction.meta["label_studio"]["task"]) in {str(t["id"]) for t in tasks}

    graded = workspace.store.step_outputs(workspace.store.latest_step_run("graded")["step_key"])
    verdicts = [item.verdict for item in graded]
    assert len(verdicts) == 4 and all(v is not None and v.kind == "human" for v in verdicts)
    # A fake caption ("Edit the ... image.") names no edit: every one is graded unusable.
    assert all(v.labels and v.labels[0].startswith("P0:") for v in verdicts if v is not None)
    assert {v.judge for v in verdicts if v is not None} == {f"human:{SIMULATED_USER}"}

    corrected = workspace.store.step_outputs(
        workspace.store.latest_step_run("corrected")["step_key"]
    )
    # Every fake caption fails the rules: "none of them", and the reference written instead.
    assert len(corrected) == 4
    for item in corrected:
        assert item.preference is not None and item.instruction is not None
        assert item.preference.chosen_id == item.instruction.id
        assert item.instruction.text == reference_instruction(item)
        assert item.instruction.author == SIMULATED_USER

    again = run_spec(spec)  # a second run creates no task and no annotation
    assert again.steps["refined"].status == "cached"
    assert sum(len(t["annotations"]) for t in client.export(project)) == 4


def test_push_twice_as_after_a_kill_before_the_commit_creates_nothing_new(workspace):
    items = _items(workspace, 3)
    first = _plugin(workspace, "refine").push(items)
    second = _plugin(workspace, "refine").push(items)  # a fresh step, as after a restart
    assert first == second and len(set(first)) == 3
    assert len(workspace.tasks(workspace.server.client())) == 3


def test_late_candidates_join_their_pairs_untouched_prefer_task(workspace):
    (item,) = _items(workspace, 1)
    assert item.instruction is not None
    plugin = _plugin(workspace, "prefer")
    (first,) = plugin.push([item])
    second_candidate = item.instruction.model_copy(
        update={"id": "01JSECONDCANDIDATE00000000", "text": "Another try.", "candidate": 1}
    )
    (second,) = _plugin(workspace, "prefer").push(
        [item.model_copy(update={"instruction": second_candidate})]
    )
    assert first == second
    client = workspace.server.client()
    (task,) = workspace.tasks(client)
    assert task["data"]["candidates"] == [item.instruction.text, "Another try."]

    annotate(client, task, [choice("best", "B", to="target")])
    third_candidate = second_candidate.model_copy(
        update={"id": "01JTHIRDCANDIDATE000000000", "text": "Third."}
    )
    (third,) = _plugin(workspace, "prefer").push(
        [item.model_copy(update={"instruction": third_candidate})]
    )
    assert third != first  # the annotated task is left as it was annotated
    assert len(workspace.tasks(client)) == 2


def test_a_personal_access_token_works_like_a_legacy_token(label_studio):
    legacy = label_studio.client()
    try:
        personal = legacy.request("POST", "/api/token/")["token"]
    except LabelStudioError as exc:  # only on a reused server: one token per user
        pytest.skip(f"this server's admin has a personal access token already: {exc}")
    assert personal.count(".") == 2
    client = LabelStudioClient(label_studio.url, personal)
    assert "admin@example.com" in client.users().values()


def test_serve_stops_its_label_studio_on_sigterm(tmp_path: Path) -> None:
    """A service manager stops ``ecap labelstudio serve`` with SIGTERM: the Label Studio child
    must stop with it, not linger holding the port."""
    if executable() is None:
        pytest.skip(f"no Label Studio server in {venv_path()}: `ecap labelstudio install-server`")
    import signal
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "images").mkdir()
    serve = subprocess.Popen(
        [
            sys.executable, "-m", "ecap.cli", "labelstudio", "serve",
            "--data-dir", str(tmp_path / "data"),
            "--document-root", str(tmp_path / "images"),
            "--port", str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert serve.stdout is not None
    for line in serve.stdout:
        if "is up at" in line:
            break
    else:
        pytest.fail(f"serve exited ({serve.wait()}) before Label Studio was up")
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=60)
    with socket.socket() as client:
        assert client.connect_ex(("127.0.0.1", port)) != 0, "Label Studio still holds the port"
