"""Built-in judges (``gemini``, ``openai``) sharing the EditCaption rubric engine, and
``ecap report``. The SDKs are imported only when a judge first calls its model."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .gemini import GeminiJudge
from .openai_judge import OpenAIJudge


@hookimpl
def register_judges(register: Register) -> None:
    register("gemini", GeminiJudge)
    register("openai", OpenAIJudge)


@hookimpl
def register_commands(cli: object) -> None:
    from .report import report_command

    cli.add_command(report_command)  # type: ignore[attr-defined]
