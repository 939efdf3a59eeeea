"""ShapesEdit: an offline world of coloured shapes where the whole EditCaption recipe can run.

- ``shapes`` (source): procedurally generated (source, target) pairs with exact references;
- ``shapes-rules`` (judge): the paper's rubric applied by rules against those references, with
  failure-mode tags;
- ``shapes-annotator`` (annotate): a simulated human that refines instructions and corrects
  failures into preferences, recorded as simulated.
- a ``failure_modes`` section of ``ecap report``: the rate of each failure-mode tag per judge step
  and model, orientation and viewpoint errors first.
"""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .annotator import ShapesAnnotator
from .judge import ShapesRulesJudge
from .source import ShapesSource


@hookimpl
def register_sources(register: Register) -> None:
    register("shapes", ShapesSource)


@hookimpl
def register_judges(register: Register) -> None:
    register("shapes-rules", ShapesRulesJudge)


@hookimpl
def register_annotators(register: Register) -> None:
    register("shapes-annotator", ShapesAnnotator)


@hookimpl
def register_report_sections(register: Register) -> None:
    register("failure_modes", "ecap_shapes.report:FailureModesSection")
