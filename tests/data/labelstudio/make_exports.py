"""Regenerate the Label Studio export files in this folder from a real server.

Not a test: run it by hand when the plugin's task format changes, against a server you started
(``ecap labelstudio serve --document-root DIR``), with the variables the integration tests use::

    ECAP_TEST_LABEL_STUDIO_URL=http://127.0.0.1:8080 ECAP_TEST_LABEL_STUDIO_TOKEN=... \
    ECAP_TEST_LABEL_STUDIO_DOCUMENT_ROOT=DIR python tests/data/labelstudio/make_exports.py

It copies ``images/`` and ``pairs.csv`` to ``DIR/labelstudio/``, pushes refine, prefer and evaluate
tasks with ecap itself, submits the annotations listed below as three users, exports every
project as JSON and JSON_MIN, and writes ``malformed.json``: ``refine.json`` with one deliberate
defect per added entry. Image references in the exports are then relative to this folder's parent
(``?d=labelstudio/images/...``), which the unit tests use as ``document_root``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ecap.testing import run_spec
from ecap_labelstudio.client import LabelStudioClient

HERE = Path(__file__).resolve().parent


def text(name: str, value: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "textarea", "value": {"text": [value]}}


def choice(name: str, *values: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": list(values)}}


#: kind -> pair number -> the annotations submitted, in order: (user, result, lead time, skipped)
SCRIPT: dict[str, dict[int, list[tuple[str, list[dict[str, Any]], float, bool]]]] = {
    "refine": {
        0: [
            (
                "admin",
                [text("refined", "Turn the ball of pair 0 blue."), choice("quality", "needs_fix")],
                31.5,
                False,
            )
        ],
        1: [("admin", [choice("quality", "accurate")], 4.0, False)],
        2: [("admin", [], 2.0, True)],
        3: [
            (
                "admin",
                [text("refined", "First fix of pair 3."), choice("quality", "needs_fix")],
                12.0,
                False,
            ),
            (
                "bob",
                [text("refined", "Bob's fix of pair 3."), choice("quality", "needs_fix")],
                20.0,
                False,
            ),
        ],
    },
    "prefer": {
        0: [("admin", [choice("best", "B", to="target")], 8.0, False)],
        1: [
            (
                "admin",
                [
                    choice("best", "none", to="target"),
                    text("rewrite", "Add a red hat to pair 1.", to="target"),
                ],
                25.0,
                False,
            )
        ],
        2: [("admin", [], 1.0, True)],
        3: [("admin", [choice("best", "tie", to="target")], 6.0, False)],
    },
    "evaluate": {
        0: [("admin", [choice("verdict", "correct")], 5.0, False)],
        1: [
            (
                "admin",
                [
                    choice("verdict", "defective"),
                    choice("p0", "P0:viewpoint", "P0:text"),
                    choice("p1", "P1:leakage"),
                    text("comment", "left and right swapped"),
                ],
                14.0,
                False,
            )
        ],
        2: [("admin", [choice("verdict", "defective"), choice("p1", "P1:global")], 9.0, False)],
        3: [
            ("admin", [choice("verdict", "defective"), choice("p1", "P1:leakage")], 7.0, False),
            ("bob", [choice("verdict", "correct")], 3.0, False),
            ("carol", [choice("verdict", "defective"), choice("p1", "P1:omission")], 11.0, False),
        ],
    },
}


def main() -> None:
    url = os.environ["ECAP_TEST_LABEL_STUDIO_URL"]
    token = os.environ["ECAP_TEST_LABEL_STUDIO_TOKEN"]
    root = Path(os.environ["ECAP_TEST_LABEL_STUDIO_DOCUMENT_ROOT"])
    os.environ["LABEL_STUDIO_API_KEY"] = token
    work = root / "labelstudio"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(HERE / "images", work / "images")
    shutil.copy(HERE / "pairs.csv", work / "pairs.csv")
    client = LabelStudioClient(url, token)
    known = {email: uid for uid, email in client.users().items()}
    users: dict[str, int | None] = {"admin": None}
    for name in ("bob", "carol"):
        email = f"{name}@example.com"
        users[name] = known[email] if email in known else client.create_user(email)
    with tempfile.TemporaryDirectory() as scratch:
        for kind, script in SCRIPT.items():
            title = f"ecap fixture {kind} {os.urandom(3).hex()}"
            settings = {
                "task": kind,
                "url": url,
                "project": title,
                "document_root": str(root),
                "images_root": str(work / "images"),
            }
            upstream = "sft" if kind == "prefer" else "pairs"
            spec = Path(scratch) / f"{kind}.yaml"
            spec.write_text(
                "name: fixtures\nsteps:\n"
                f"  pairs: {{source: csv, with: {{path: {work / 'pairs.csv'}, "
                "instruction_origin: model}}\n"
                "  sft: {caption: fake, from: pairs, with: {candidates: 2}}\n"
                f"  ask: {{annotate: label-studio, from: {upstream}, "
                f"with: {json.dumps(settings)}}}\n"
            )
            run_spec(spec, store=f"sqlite:///{Path(scratch) / 'ecap.db'}")
            project = client.projects(title)[0]["id"]
            tasks = sorted(client.export(project), key=lambda t: t["id"])
            for number, task in enumerate(tasks):
                for user, result, lead_time, skipped in script.get(number, []):
                    body: dict[str, Any] = {
                        "result": [
                            {"id": f"r{i}", "origin": "manual", **r} for i, r in enumerate(result)
                        ],
                        "lead_time": lead_time,
                        "was_cancelled": skipped,
                    }
                    if users[user] is not None:
                        body["completed_by"] = users[user]
                    client.create_annotation(task["id"], body)
            for fmt, suffix in (("JSON", ""), ("JSON_MIN", "-min")):
                exported = client.request(
                    "GET",
                    f"/api/projects/{project}/export",
                    params={"exportType": fmt, "download_all_tasks": "true"},
                )
                (HERE / f"{kind}{suffix}.json").write_text(json.dumps(exported, indent=1) + "\n")
    write_malformed()


def write_malformed() -> None:
    """``refine.json`` plus one entry per defect the importer must report on its own."""
    good = json.loads((HERE / "refine.json").read_text())
    sample = copy.deepcopy(good[0])

    def variant(task_id: int, **changes: Any) -> dict[str, Any]:
        task = copy.deepcopy(sample)
        task["id"] = task_id
        for path, value in changes.items():
            target = task
            *parents, last = path.split("__")
            for key in parents:
                target = target[int(key)] if isinstance(target, list) else target[key]
            target[last] = value
        return task

    bad: list[Any] = [
        "not a task",
        {"neither": "data nor id"},
        variant(9001, annotations="oops"),
        variant(9002, annotations__0__result__0__from_name="no_such_control"),
        variant(9003, annotations__0__result__0__type="choices"),
        variant(9004, annotations__0__result__1__value={"choices": ["excellent"]}),
        variant(9005, data__source_image="/data/local-files/?d=labelstudio/../../secret.png"),
        variant(9006, data__source_image="/etc/passwd"),
        variant(9007, data__pair_id="0" * 64),
        variant(9008, data__target_image="/data/local-files/?d=labelstudio/images/missing.png"),
    ]
    (HERE / "malformed.json").write_text(json.dumps(good + bad, indent=1) + "\n")


if __name__ == "__main__":
    main()
