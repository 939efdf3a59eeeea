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
