"""The ``gemini`` judge: Google's Gemini models through the google-genai SDK.

Clients, the message layout (the same labelled two-image turn as the OpenAI judge and the
captioners send) and answers come from :mod:`ecap.providers.gemini`; the engine retries (the SDK's
own retries are off). ``base_url`` points it at another endpoint (a proxy, or ecap.testing's fake
server).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from ecap.providers import gemini, two_image_layout
from ecap.remote import Pacer, Reply

from .engine import JOB_FAILED, JudgeRequest, Provider, RubricJudge, RubricJudgeConfig

PLUGIN = "gemini judge"
FINISHED = {"JOB_STATE_SUCCEEDED"}
FAILED = {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


class GeminiJudgeConfig(RubricJudgeConfig):
    model: str = Field("gemini-2.5-pro", description="the paper's judge is Gemini-2.5-Pro")
    api_version: str | None = Field(None, description="e.g. v1beta (default: the SDK's)")


class GeminiProvider(Provider):
    name = "gemini"
    standard_key: ClassVar[tuple[str, ...]] = gemini.STANDARD_KEY

    def __init__(self, config: GeminiJudgeConfig, pacer: Pacer | None = None) -> None:
        self.pacer = pacer
        self.gemini = gemini.connect(
            config, timeout=config.timeout, api_version=config.api_version, plugin=PLUGIN
        )
        self.types = self.gemini.types
        self.client = self.gemini.client

    def _contents(self, request: JudgeRequest) -> Any:
        return self.gemini.parts(two_image_layout(request.labels, request.prompt), request.images)

    def _config(self, request: JudgeRequest) -> Any:
        extra: dict[str, Any] = {}
        if request.schema is not None:
            extra = {
                "response_mime_type": "application/json",
                "response_json_schema": request.schema,
            }
        return self.types.GenerateContentConfig(
            system_instruction=request.system,
            temperature=request.temperature,
            max_output_tokens=request.max_output_tokens,
            **extra,
        )

    async def send(self, request: JudgeRequest, timeout: float) -> Reply:
        return await self.gemini.generate(
            request.model, self._contents(request), self._config(request), self.pacer
        )

    def submit_batch(self, requests: Sequence[tuple[str, JudgeRequest]]) -> str:
        model = requests[0][1].model
        inlined = [
            self.types.InlinedRequest(
                contents=self._contents(r), metadata={"key": key}, config=self._config(r)
            )
            for key, r in requests
        ]
        job = self.client.batches.create(
            model=model, src=inlined, config={"display_name": f"ecap-judge-{int(time.time())}"}
        )
        return str(job.name)

    def poll_batch(self, job_id: str) -> dict[str, Reply | str] | None:
        job = self.client.batches.get(name=job_id)
        state = getattr(job.state, "name", str(job.state))
        if state in FAILED:
            return {JOB_FAILED: f"batch job {job_id} ended {state}: {job.error}"}
        if state not in FINISHED:
            return None
        answers: dict[str, Reply | str] = {}
        for entry in (job.dest.inlined_responses or []) if job.dest else []:
            key = (entry.metadata or {}).get("key", "")
            if entry.error is not None or entry.response is None:
                answers[key] = f"batch request failed: {entry.error}"
            else:
                answers[key] = gemini.reply(entry.response)
        if job.dest and job.dest.file_name:
            lines = self.client.files.download(file=job.dest.file_name).decode().splitlines()
            for line in filter(None, lines):
                answers.update(self._file_line(line))
        return answers

    def _file_line(self, line: str) -> dict[str, Reply | str]:
        data = json.loads(line)
        if "response" not in data:
            return {data.get("key", ""): f"batch request failed: {data.get('error', data)}"}
        response = self.types.GenerateContentResponse.model_validate(data["response"])
        return {data.get("key", ""): gemini.reply(response)}

    async def aclose(self) -> None:
        await self.client.aio.aclose()


class GeminiJudge(RubricJudge):
    """Judges with a Gemini model (default gemini-2.5-pro, the paper's judge)."""

    Config = GeminiJudgeConfig
    config: GeminiJudgeConfig

    def make_provider(self) -> Provider:
        return GeminiProvider(self.config, self.pacer)


__all__ = ["GeminiJudge", "GeminiJudgeConfig"]
