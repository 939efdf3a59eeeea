"""Built-in judges (``gemini``, ``openai``) sharing the EditCaption rubric engine, and their
sections of ``ecap report`` (judge scores, ablation, judge-human agreement). The SDKs are
imported only when a judge first calls its model."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .gemini import GeminiJudge
from .openai_judge import OpenAIJudge


@hookimpl
def register_judges(register: Register) -> None:
    register("gemini", GeminiJudge)
    register("openai", OpenAIJudge)


@hookimpl
def register_report_sections(register: Register) -> None:
    register("scores", "ecap_judges.report:ScoresSection")
    register("ablation", "ecap_judges.report:AblationSection")
    register("agreement", "ecap_judges.report:AgreementSection")
