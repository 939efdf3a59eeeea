"""A SIMULATED annotator for the human-loop example. It is a script, not a person.

It answers every open task of the example's three Label Studio projects the way the labelling UI
would submit a person's answer, from a fixed script keyed by the instruction text, as a user named
simulated-annotator@example.com, so that every record it leads to says it was simulated. Use it to
see what a finished human step looks like; for real data, people annotate in the browser instead.

    python examples/human-loop/simulated_annotator.py   # needs LABEL_STUDIO_URL, ..._API_KEY
"""

from __future__ import annotations

import os
from typing import Any

from ecap_labelstudio.client import LabelStudioClient

ANNOTATOR = "simulated-annotator@example.com"


def text(name: str, value: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "textarea", "value": {"text": [value]}}


def choice(name: str, *values: str, to: str = "instruction") -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": list(values)}}


#: project -> start of an instruction -> the scripted answer (None: skip the task)
SCRIPT: dict[str, dict[str, list[dict[str, Any]] | None]] = {
    "human-loop refine": {
        "Change the red ball": [choice("quality", "accurate")],
        "Move the red ball": [
            text("refined", "Move the red ball from the left of the lawn to the right."),
            choice("quality", "needs_fix"),
        ],
        "Remove the yellow sun": None,  # the simulated person skips this one
        "Turn the scene into night": [
            text("refined", "Turn the day scene into night: darken the sky and remove the sun."),
            choice("quality", "needs_fix"),
        ],
    },
    "human-loop correct": {
        "Turn the scene into night": [
            choice("best", "none", to="target"),
            text("rewrite", "Make it night: a dark blue sky, and no sun.", to="target"),
        ],
        "Place a brown wooden box": [
            choice("best", "none", to="target"),
            text("rewrite", "Put a brown wooden box in the middle of the lawn.", to="target"),
        ],
    },
    "human-loop grade": {
        "Change the red ball": [choice("verdict", "correct")],
        "Move the red ball": [choice("verdict", "correct")],
        "Add a small tree": [choice("verdict", "defective"), choice("p2", "P2:redundant")],
        "Remove the yellow sun": [choice("verdict", "correct")],
        "Turn the scene into night": [choice("verdict", "defective"), choice("p1", "P1:global")],
        "Place a brown wooden box": [
            choice("verdict", "defective"),
            choice("p0", "P0:attribute"),
            text("comment", "simulated: the box is grey, not brown"),
        ],
    },
}
#: what the script answers when it has no entry for an instruction
DEFAULT = {
    "human-loop refine": [choice("quality", "accurate")],
    "human-loop correct": [choice("best", "A", to="target")],
    "human-loop grade": [choice("verdict", "correct")],
}


def shown(task: dict[str, Any]) -> str:
    data = task["data"]
    return str(data.get("instruction") or (data.get("candidates") or [""])[0])


def main() -> None:
    client = LabelStudioClient(os.environ["LABEL_STUDIO_URL"], os.environ["LABEL_STUDIO_API_KEY"])
    users = {email: uid for uid, email in client.users().items()}
    annotator = users.get(ANNOTATOR) or client.create_user(ANNOTATOR)
    for title, script in SCRIPT.items():
        for project in client.projects(title):
            for task in client.export(project["id"]):
                if task["annotations"]:
                    continue
                instruction = shown(task)
                key = next((k for k in script if instruction.startswith(k)), None)
                result = script[key] if key is not None else DEFAULT[title]
                client.create_annotation(
                    task["id"],
                    {
                        "result": [
                            {"id": f"sim{n}", "origin": "manual", **r}
                            for n, r in enumerate(result or [])
                        ],
                        "was_cancelled": result is None,
                        "lead_time": 12.0,
                        "completed_by": annotator,
                    },
                )
                action = "skipped" if result is None else "answered"
                print(f"[SIMULATED] {title}: task {task['id']} {action}: {instruction}")


if __name__ == "__main__":
    main()
