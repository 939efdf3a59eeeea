"""The ``openai`` judge: OpenAI models, or any OpenAI-compatible server (vLLM serving Qwen3-VL as
an open judge, a gateway) through ``base_url``.

Clients, the message layout (the same labelled two-image turn as the Gemini judge and the
captioners send) and answers come from :mod:`ecap.providers.openai`; the engine retries (the
SDK's own retries are off), honouring Retry-After and retry-after-ms."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ecap.providers import data_uri, openai, two_image_content
from ecap.remote import Pacer, Reply, Retryable

from .engine import JOB_FAILED, JudgeRequest, Provider, RubricJudge, RubricJudgeConfig

PLUGIN = "openai judge"
FAILED = {"failed", "expired", "cancelled", "cancelling"}


class OpenAIJudgeConfig(RubricJudgeConfig):
    model: str = Field("gpt-4.1", description="model id on the server")
    json_mode: openai.JsonMode = Field(
        "json_schema", description="how to ask for JSON; some compatible servers lack json_schema"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="extra request fields, e.g. vLLM's structured_outputs"
    )


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, config: OpenAIJudgeConfig, pacer: Pacer | None = None) -> None:
        self.config = config
        self.pacer = pacer
        self.client = openai.make_client(config, timeout=config.timeout, plugin=PLUGIN)
        self.sync_client = openai.make_client(
            config, timeout=config.timeout, plugin=PLUGIN, sync=True
        )

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        """The chat-completions body; the same for a direct call and a batch line."""
        (source, source_mime), (target, target_mime) = request.images
        source_label, target_label = request.labels
        content = two_image_content(
            (source_label, data_uri(source, source_mime)),
            (target_label, data_uri(target, target_mime)),
            request.prompt,
        )
        body: dict[str, Any] = {
            "model": request.model,
            "temperature": request.temperature,
            "max_completion_tokens": request.max_output_tokens,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": content},
            ],
            **openai.response_format(request.schema, self.config.json_mode),
        }
        return {**body, **self.config.extra_body}

    async def send(self, request: JudgeRequest, timeout: float) -> Reply:
        return await openai.post_chat_completion(
            self.client, self.body(request), PLUGIN, self.pacer
        )

    def submit_batch(self, requests: Sequence[tuple[str, JudgeRequest]]) -> str:
        lines = "".join(
            json.dumps(
                {
                    "custom_id": key,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": self.body(r),
                }
            )
            + "\n"
            for key, r in requests
        )
        upload = self.sync_client.files.create(
            file=("ecap-judge.jsonl", io.BytesIO(lines.encode())), purpose="batch"
        )
        job = self.sync_client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"source": "ecap-judge"},
        )
        return str(job.id)

    def poll_batch(self, job_id: str) -> dict[str, Reply | str] | None:
        job = self.sync_client.batches.retrieve(job_id)
        if job.status in FAILED:
            return {JOB_FAILED: f"batch job {job_id} ended {job.status}: {job.errors}"}
        if job.status != "completed":
            return None
        answers: dict[str, Reply | str] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            for line in filter(None, self.sync_client.files.content(file_id).text.splitlines()):
                data = json.loads(line)
                response = data.get("response") or {}
                if data.get("error") or response.get("status_code") != 200:
                    answers[data["custom_id"]] = (
                        f"batch request failed: {data.get('error') or response}"
                    )
                else:
                    answers[data["custom_id"]] = _batch_reply(response["body"])
        return answers

    async def aclose(self) -> None:
        await self.client.close()
        self.sync_client.close()


def _batch_reply(body: dict[str, Any]) -> Reply | str:
    """A batch line's answer; one without choices failed (there is no retrying it here)."""
    try:
        return openai.reply(body)
    except Retryable as exc:
        return f"batch request failed: {exc}"


class OpenAIJudge(RubricJudge):
    """Judges with an OpenAI model or any OpenAI-compatible server (``base_url``)."""

    Config = OpenAIJudgeConfig
    config: OpenAIJudgeConfig

    def make_provider(self) -> Provider:
        return OpenAIProvider(self.config, self.pacer)
