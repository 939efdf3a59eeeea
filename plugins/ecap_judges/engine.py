"""The rubric engine every LLM judge shares: one call per axis, cached, rate-limited, retried.

A provider (Gemini, OpenAI-compatible) only knows how to send one request and how to run a batch
job; everything else lives here, so every judge follows the same rules:

- each axis is a separate call with both images, the structured reference and the instruction;
- before a call, the store's call log is asked for an identical earlier answer; after it, the
  answer is written at once (answers arriving in one turn of the event loop share a
  transaction: :meth:`ecap.calls.CallLog.grouped`), so a killed step re-sends only what had not
  come back;
- at most ``max_concurrent_calls`` calls are in flight, started at a smooth pace within
  ``requests_per_minute`` and ``tokens_per_minute`` and within what the provider states or its
  429s reveal (:class:`ecap.remote.RemoteCaller`, the captioners' loop too); failed calls are
  retried with exponential backoff and jitter, waiting at least what the server's Retry-After
  asks;
- an answer that cannot be parsed is asked again (``parse_attempts``) and otherwise fails that
  sample with the reason: a score is never guessed;
- with ``batch: true`` requests go through the provider's batch API; job ids are stored before
  polling, and the step waits until the jobs finish (a later run collects them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from ecap.calls import CallLog, CallRecord, request_hash
from ecap.images import ImageReadError, prepare_image
from ecap.interfaces import Judge, transport_field
from ecap.providers import HostedEndpoint
from ecap.records import Item, Reference, SampleError, Verdict
from ecap.remote import RemoteCaller, RemotePolicy, Reply, estimate_tokens
from ecap.rubric import Axis, Rubric, Scoring, UnparsableAnswer, format_reference

from .prompts import SYSTEM, default_rubric


@dataclass(frozen=True)
class JudgeRequest:
    """One axis call, in provider-neutral form."""

    model: str
    system: str
    prompt: str
    images: tuple[tuple[bytes, str], ...]  # (bytes, mime type), source first
    schema: dict[str, Any] | None
    temperature: float
    max_output_tokens: int
    image_hashes: tuple[str, ...] = ()
    #: The texts before the source and the edited image: every provider sends them.
    labels: tuple[str | None, str | None] = ("Source image:", "Edited image:")

    def identity(self) -> dict[str, Any]:
        """What the answer depends on (images by hash): the call log's key."""
        return {
            "system": self.system,
            "prompt": self.prompt,
            "labels": list(self.labels),
            "images": list(self.image_hashes),
            "schema": self.schema,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
        }

    def estimated_tokens(self) -> int:
        return estimate_tokens(
            len(self.system) + len(self.prompt), len(self.images), self.max_output_tokens
        )


#: The key under which :meth:`Provider.poll_batch` reports a job that failed as a whole.
JOB_FAILED = "*"
MISSING_FROM_JOB = "missing from the job's results"


class Provider(ABC):
    name: str

    @abstractmethod
    async def send(self, request: JudgeRequest, timeout: float) -> Reply:
        """One call. Raise :class:`ecap.remote.Retryable` for transient failures, anything else
        otherwise."""

    def submit_batch(self, requests: Sequence[tuple[str, JudgeRequest]]) -> str:
        """Submit (key, request) pairs as one batch job; return the job id."""
        raise NotImplementedError(f"{self.name} has no batch API")

    def poll_batch(self, job_id: str) -> dict[str, Reply | str] | None:
        """``None`` while the job runs; then key -> reply, or key -> error message. A job that
        failed as a whole answers ``{JOB_FAILED: reason}``: the reason is every request's."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Close network clients."""


class RubricJudgeConfig(RemotePolicy, HostedEndpoint):
    model: str = Field(description="judge model id, e.g. gemini-2.5-pro or gpt-4.1")
    rubric: Rubric = Field(
        default_factory=default_rubric,
        description="axes, prompts, weights and rules (default: the paper's)",
    )
    weights: dict[str, float] | None = Field(
        None, description="override axis weights by name, e.g. {accuracy: 0.5, clarity: 0.1}"
    )
    scoring: Scoring = Field(
        default_factory=Scoring,
        description="where the paper's prompts and worked tables disagree, which to follow "
        "(default: the prompts), and extra vague terms for Clarity (default: none)",
    )
    temperature: float = 0.0
    max_output_tokens: int = Field(2048, ge=16)
    structured_output: bool = Field(True, description="send the answer's JSON schema")
    parse_attempts: int = transport_field(2, ge=1, description="asks per call when unparsable")
    batch: bool = transport_field(False, description="use the provider's batch API")
    batch_discount: float = transport_field(0.5, description="price factor of batch calls")
    batch_wait: float = transport_field(
        0.0, ge=0, description="seconds to wait for a batch job in-process before the step waits"
    )
    batch_poll_interval: float = transport_field(10.0, gt=0)

    @model_validator(mode="after")
    def _apply_weights(self) -> RubricJudgeConfig:
        if self.weights:
            names = {a.name for a in self.rubric.axes}
            unknown = set(self.weights) - names
            if unknown:
                raise ValueError(
                    f"weights for unknown axes {sorted(unknown)}; axes are {sorted(names)}"
                )
            self.rubric = Rubric(
                id=self.rubric.id,
                axes=[
                    a.model_copy(update={"weight": self.weights.get(a.name, a.weight)})
                    for a in self.rubric.axes
                ],
            )
            self.weights = None
        return self


#: An item's calls: each axis with its call-log key and its request.
Plan = list[tuple[Axis, str, JudgeRequest]]


@dataclass
class _Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    calls: int = 0
    cached: int = 0
    answers: dict[str, Any] = field(default_factory=dict)


class RubricJudge(Judge):
    """Base of the LLM judges. Subclasses provide :meth:`make_provider`."""

    Config = RubricJudgeConfig
    config: RubricJudgeConfig
    revision = "1"

    def __init__(self, config: RubricJudgeConfig, context: Any) -> None:
        super().__init__(config, context)
        self._provider: Provider | None = None
        self._caller = RemoteCaller(config)
        #: Paces the calls within the provider's rate limits; the provider tells it what the
        #: answers say about them.
        self.pacer = self._caller.pacer
        self._schemas: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def make_provider(self) -> Provider:
        """Build the provider (imports its SDK); it reports rate-limit signals to
        :attr:`pacer`."""

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = self.make_provider()
        return self._provider

    @property
    def judge_name(self) -> str:
        return f"{self.provider.name}:{self.config.model}"

    # -- the Judge interface ------------------------------------------------------------------

    async def ajudge(self, batch: Sequence[Item]) -> list[Verdict | SampleError | None]:
        if self.config.batch:
            return await asyncio.to_thread(self._judge_batch_api, batch)
        plans = self._plan(batch)
        calls: CallLog | None = self.context.calls
        known = calls.lookup(self._keys(plans)) if calls else {}  # one query per batch
        work = (self._judge_item(i, plan, known) for i, plan in zip(batch, plans, strict=True))
        if calls is None:
            return list(await asyncio.gather(*work))
        with calls.grouped():  # answers arriving together share a transaction
            return list(await asyncio.gather(*work))

    def close(self) -> None:
        if self._provider is not None:
            with contextlib.suppress(Exception):  # the loop that owned the clients has ended
                asyncio.run(self._provider.aclose())
            self._provider = None

    # -- one item, one call per axis ----------------------------------------------------------

    def requests_for(self, item: Item) -> list[tuple[Axis, JudgeRequest]]:
        if item.instruction is None or item.reference is None:
            missing = "an instruction" if item.instruction is None else "a reference"
            raise ValueError(f"pair {item.pair.id[:12]} has no {missing} to judge against")
        images = tuple(
            (image.data, image.mime)
            for image in (prepare_image(ref) for ref in (item.pair.source, item.pair.target))
        )
        reference = format_reference(item.reference)
        return [
            (
                axis,
                JudgeRequest(
                    model=self.config.model,
                    system=SYSTEM,
                    prompt=axis.prompt.format(
                        reference=reference, instruction=item.instruction.text
                    ),
                    images=images,
                    schema=self._schema(axis),
                    temperature=self.config.temperature,
                    max_output_tokens=self.config.max_output_tokens,
                    image_hashes=(item.pair.source.sha256, item.pair.target.sha256),
                ),
            )
            for axis in self.config.rubric.axes
        ]

    def _schema(self, axis: Axis) -> dict[str, Any] | None:
        """The axis' answer schema, generated once (pydantic takes milliseconds per schema)."""
        if not self.config.structured_output:
            return None
        if axis.name not in self._schemas:
            self._schemas[axis.name] = axis.answer_schema()
        return self._schemas[axis.name]

    def _plan(self, batch: Sequence[Item]) -> list[Plan | SampleError]:
        """Per item, its calls with their call-log keys, or why it cannot be judged."""
        plans: list[Plan | SampleError] = []
        for item in batch:
            try:
                plans.append(
                    [
                        (axis, request_hash(self.provider.name, self.config.model, r.identity()), r)
                        for axis, r in self.requests_for(item)
                    ]
                )
            except (ValueError, ImageReadError) as exc:
                plans.append(SampleError.from_exception(exc))
        return plans

    @staticmethod
    def _keys(plans: Sequence[Plan | SampleError]) -> list[str]:
        return [key for plan in plans if isinstance(plan, list) for _, key, _ in plan]

    async def _judge_item(
        self,
        item: Item,
        plan: Plan | SampleError,
        known: dict[str, CallRecord],
    ) -> Verdict | SampleError:
        if isinstance(plan, SampleError):
            return plan
        assert item.reference is not None
        usage = _Usage()
        results = await asyncio.gather(
            *(
                self._score_axis(axis, key, request, known.get(key), item, usage)
                for axis, key, request in plan
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            return SampleError.from_exception(errors[0])
        scores = {
            axis.name: float(r)  # type: ignore[arg-type]  # exceptions were handled above
            for (axis, _, _), r in zip(plan, results, strict=True)
        }
        return self._verdict(item, scores, usage)

    async def _score_axis(
        self,
        axis: Axis,
        key: str,
        request: JudgeRequest,
        cached: CallRecord | None,
        item: Item,
        usage: _Usage,
    ) -> float:
        assert item.reference is not None
        reference = item.reference

        def counted(reply: Reply, cost: float) -> None:
            usage.calls += 1
            usage.tokens_in += reply.tokens_in
            usage.tokens_out += reply.tokens_out
            usage.cost += cost

        score, served = await self._caller.logged(
            self.context.calls,
            key,
            cached,
            provider=self.provider.name,
            model=self.config.model,
            send=lambda: self.provider.send(request, self.config.timeout),
            estimated_tokens=request.estimated_tokens(),
            accept=lambda reply: self._parse(axis, reply.text, reference, item, usage),
            rejects=(UnparsableAnswer,),
            attempts=self.config.parse_attempts,
            on_call=counted,
        )
        usage.cached += served
        return score

    def _parse(
        self, axis: Axis, text: str, reference: Reference, item: Item, usage: _Usage
    ) -> float:
        assert item.instruction is not None
        score, answer = axis.score(text, reference, item.instruction.text, self.config.scoring)
        usage.answers[axis.name] = answer.model_dump()
        return score

    def _cost(self, reply: Reply, batch: bool) -> float:
        cost = self.config.cost(reply.tokens_in, reply.tokens_out)
        return cost * (self.config.batch_discount if batch else 1.0)

    def _log(
        self,
        key: str,
        reply: Reply,
        latency: float | None,
        cost: float,
        *,
        status: str,
        error: str | None = None,
        batch_job_id: str | None = None,
    ) -> None:
        calls: CallLog | None = self.context.calls
        if calls is None:
            return
        fields: dict[str, Any] = {
            "status": status,
            "response": reply.as_response(),
            "tokens_in": reply.tokens_in,
            "tokens_out": reply.tokens_out,
            "cost": cost,
            "latency_ms": latency,
            "error": error,
        }
        if batch_job_id:
            calls.complete_submitted(key, batch_job_id, **fields)
        else:
            calls.record(key, provider=self.provider.name, model=self.config.model, **fields)

    def _verdict(self, item: Item, scores: dict[str, float], usage: _Usage) -> Verdict:
        assert item.instruction is not None and item.reference is not None
        rubric = self.config.rubric
        return Verdict(
            pair_id=item.pair.id,
            instruction_id=item.instruction.id,
            reference_id=item.reference.id,
            judge=self.judge_name,
            kind="model",
            axes=scores,
            reasons={k: v.get("reasoning", "") for k, v in usage.answers.items()},
            weighted=rubric.weighted(scores),
            meta={
                "rubric": rubric.id,
                "reading": self.config.scoring.reading,
                "weights": {a.name: a.weight for a in rubric.axes},
                "answers": usage.answers,
                "tokens_in": usage.tokens_in,
                "tokens_out": usage.tokens_out,
                "cost": round(usage.cost, 8),
                "calls": usage.calls,
                "cached_calls": usage.cached,
            },
        )

    # -- batch API ----------------------------------------------------------------------------

    def _judge_batch_api(self, batch: Sequence[Item]) -> list[Verdict | SampleError | None]:
        """Submit what no job covers yet, collect what finished jobs answered, and leave the
        rest pending (``None``): the step waits and a later run collects."""
        calls: CallLog = self.context.calls
        plans = self._plan(batch)
        wanted = [(k, r) for p in plans if isinstance(p, list) for _, k, r in p]
        known = calls.lookup([k for k, _ in wanted])
        fresh = list({k: r for k, r in wanted if k not in known}.items())
        if fresh:
            job_id = self.provider.submit_batch(fresh)
            for key, _ in fresh:  # stored before anything polls the job
                calls.record(
                    key,
                    provider=self.provider.name,
                    model=self.config.model,
                    status="submitted",
                    batch_job_id=job_id,
                )
            known.update(calls.lookup([k for k, _ in fresh]))
        self._collect(known, calls)
        results: list[Verdict | SampleError | None] = []
        for item, plan in zip(batch, plans, strict=True):
            if isinstance(plan, SampleError):
                results.append(plan)
                continue
            results.append(self._verdict_from_batch(item, plan, known))
        return results

    def _collect(self, known: dict[str, CallRecord], calls: CallLog) -> None:
        jobs = {
            r.batch_job_id for r in known.values() if r.status == "submitted" and r.batch_job_id
        }
        deadline = time.monotonic() + self.config.batch_wait
        while jobs:
            for job_id in sorted(jobs):
                answers = self.provider.poll_batch(job_id)
                if answers is None:
                    continue
                jobs.discard(job_id)
                for key, record in list(known.items()):
                    if record.batch_job_id != job_id or record.status != "submitted":
                        continue
                    answer = answers.get(key, answers.get(JOB_FAILED, MISSING_FROM_JOB))
                    if isinstance(answer, Reply):
                        self._log(
                            key,
                            answer,
                            None,
                            self._cost(answer, batch=True),
                            status="ok",
                            batch_job_id=job_id,
                        )
                        known[key] = CallRecord(
                            key,
                            "ok",
                            {"text": answer.text},
                            job_id,
                            answer.tokens_in,
                            answer.tokens_out,
                        )
                    else:
                        self._log(
                            key,
                            Reply(""),
                            None,
                            0.0,
                            status="error",
                            error=answer,
                            batch_job_id=job_id,
                        )
                        known[key] = CallRecord(key, "error", {"error": answer}, job_id)
            if not jobs or time.monotonic() >= deadline:
                return
            time.sleep(self.config.batch_poll_interval)

    def _verdict_from_batch(
        self, item: Item, plan: list[tuple[Axis, str, JudgeRequest]], known: dict[str, CallRecord]
    ) -> Verdict | SampleError | None:
        records = [known.get(key) for _, key, _ in plan]
        if any(r is None or r.status == "submitted" for r in records):
            return None
        usage = _Usage()
        scores: dict[str, float] = {}
        for (axis, _, _), record in zip(plan, records, strict=True):
            assert record is not None and record.response is not None
            if record.status != "ok":
                return SampleError(
                    error_type="BatchRequestError",
                    message=f"{axis.name}: {record.response.get('error')}",
                )
            usage.tokens_in += record.tokens_in or 0
            usage.tokens_out += record.tokens_out or 0
            usage.cost += self._cost(
                Reply("", record.tokens_in or 0, record.tokens_out or 0), batch=True
            )
            assert item.reference is not None
            try:
                scores[axis.name] = self._parse(
                    axis, record.response["text"], item.reference, item, usage
                )
            except UnparsableAnswer as exc:
                self.context.calls.mark_error(record.request_hash, str(exc))  # never served again
                return SampleError.from_exception(exc)
        return self._verdict(item, scores, usage)
