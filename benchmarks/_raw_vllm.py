"""Raw vLLM for ``caption_throughput.py``: ``LLM.chat`` as a plain script would call it.

Run by the benchmark in vLLM's interpreter (``python -I _raw_vllm.py``; it imports vLLM and
Pillow, nothing of ecap). Protocol, one JSON document per line: the engine's ``vllm.LLM``
arguments first, answered by ``{"ready": true}``; then each ``{"chats": [...], "sampling":
{...}, "images": "data-uri" | "pil"}`` is answered by ``{"seconds": float, "tokens": int}``. A
chat is the OpenAI-style message list ecap sends, except that each image part's URL is a file
path, which the script turns into what a plain script would hand vLLM: the file's bytes as a
``data:`` URI (as ecap sends them), or the file opened with Pillow (``image_pil``, decoded by vLLM
when it needs the pixels). Either way vLLM decodes each image once, and nothing checks it. The
time is from the command's arrival to the last answer.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import sys
import time
from typing import Any


def with_images(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """``messages`` with every ``image_url`` part's path turned into the image, as ``kind``
    says: a ``data:`` URI of the file's bytes, or a Pillow image (``pil``)."""
    from PIL import Image

    def part(item: dict[str, Any]) -> dict[str, Any]:
        if item.get("type") != "image_url":
            return item
        path = item["image_url"]["url"]
        if kind == "pil":
            return {"type": "image_pil", "image_pil": Image.open(path)}
        with open(path, "rb") as file:
            encoded = base64.b64encode(file.read()).decode()
        mime = mimetypes.guess_type(path)[0] or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}

    return [
        {**m, "content": [part(p) for p in m["content"]]} if isinstance(m["content"], list) else m
        for m in messages
    ]


def main() -> int:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # vLLM's logs must not mix with answers
    sys.stdout = sys.stderr
    from vllm import LLM, SamplingParams

    llm = LLM(**json.loads(sys.stdin.readline()))
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        command = json.loads(line)
        started = time.perf_counter()
        chats = [with_images(chat, command["images"]) for chat in command["chats"]]
        outputs = llm.chat(chats, SamplingParams(**command["sampling"]), use_tqdm=False)
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for output in outputs for c in output.outputs)
        answers.write(json.dumps({"seconds": seconds, "tokens": tokens}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":  # vLLM's spawned processes import this file again as __mp_main__
    sys.exit(main())
