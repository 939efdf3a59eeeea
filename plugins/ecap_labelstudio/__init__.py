"""Built-in ``label-studio`` plugin: human refinement, preference correction and P0/P1/P2 grading
through Label Studio, as an ``annotate:`` step (push tasks, wait, pull) or a ``source:`` step
(import an export). httpx is imported only when the plugin first talks to a server."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .source import LabelStudioAnnotator, LabelStudioSource


@hookimpl
def register_sources(register: Register) -> None:
    register("label-studio", LabelStudioSource)


@hookimpl
def register_annotators(register: Register) -> None:
    register("label-studio", LabelStudioAnnotator)


@hookimpl
def register_commands(cli: object) -> None:
    from .cli import labelstudio_command

    cli.add_command(labelstudio_command)  # type: ignore[attr-defined]
