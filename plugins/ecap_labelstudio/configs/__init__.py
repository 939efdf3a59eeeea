"""The labelling configurations ecap ships, one XML file per task kind, and what ecap reads from
them: the controls whose results it imports, their types and their allowed choices.

The XML files are the single source of truth: the plugin creates projects with them, and parses
them to validate annotations, so a control renamed in the XML can never silently stop matching.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

TaskKind = Literal["refine", "prefer", "evaluate"]

#: Label Studio control tags ecap reads, by the ``type`` their results carry.
RESULT_TYPES = {"TextArea": "textarea", "Choices": "choices"}


@dataclass(frozen=True)
class Control:
    """One control tag: its name, the result type it produces and, for static choices, the value
    each choice exports (its alias when it has one)."""

    name: str
    type: str  # "textarea" or "choices"
    #: displayed value -> exported value; empty for text areas and dynamic choices
    choices: dict[str, str] = field(default_factory=dict)
    #: the task data field holding the options of a dynamic Choices tag (``value="$options"``)
    options_field: str | None = None

    def exported(self, value: str) -> str | None:
        """The exported value for a choice given by its value or alias; ``None`` if unknown."""
        if value in self.choices.values():
            return value
        return self.choices.get(value)


@dataclass(frozen=True)
class LabelConfig:
    """A parsed labelling configuration."""

    xml: str
    controls: dict[str, Control]

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        controls: dict[str, Control] = {}
        for element in ET.fromstring(xml).iter():
            if element.tag not in RESULT_TYPES:
                continue
            name, value = element.get("name", ""), element.get("value", "")
            controls[name] = Control(
                name=name,
                type=RESULT_TYPES[element.tag],
                choices={
                    str(c.get("value", "")): str(c.get("alias") or c.get("value", ""))
                    for c in element.iter("Choice")
                },
                options_field=value[1:] if value.startswith("$") else None,
            )
        return cls(xml=xml, controls=controls)


def shipped_xml(kind: TaskKind) -> str:
    """The XML shipped for a task kind."""
    return resources.files(__name__).joinpath(f"{kind}.xml").read_text(encoding="utf-8")


def shipped(kind: TaskKind) -> LabelConfig:
    return LabelConfig.parse(shipped_xml(kind))


__all__ = [
    "RESULT_TYPES",
    "Control",
    "LabelConfig",
    "TaskKind",
    "shipped",
    "shipped_xml",
]
