"""From a model's raw answer to the instruction, or the reason there is none.

Reasoning models put their thinking before the answer (``<think>...</think>``, or
``<answer>...</answer>`` around the answer in GLM-4.1V-Thinking), GLM-V models wrap answers in
``<|begin_of_box|>...<|end_of_box|>`` markers, and local decoding may leave end-of-turn tokens.
None of that belongs in an instruction. An answer that is empty once cleaned, that never left its
thinking, or that is implausibly long is unusable: the caller fails the pair with the reason rather
than storing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
BOX_MARKERS = re.compile(r"<\|begin_of_box\|>|<\|end_of_box\|>")
#: Control and media tokens that local decoding leaves in an answer (``<|im_end|>``,
#: ``<|vision_start|>``, ``<|image_pad|>``...; the answer is decoded with special tokens kept so
#: that thinking and box markers survive to be read here). None belongs in an instruction, and a
#: media token left in one breaks any later training on it. GLM's box markers are left to
#: ``strip_box_tokens``.
CONTROL_TOKENS = re.compile(
    r"<\|(?!begin_of_box\|>|end_of_box\|>)[A-Za-z0-9_]+\|>|</s>|\[gMASK\]|<sop>"
)


class UnusableAnswer(ValueError):
    """The model answered, but with no usable instruction. ``kind`` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Cleaned:
    text: str
    reasoning: str | None = None


def clean_answer(
    raw: str,
    *,
    strip_thinking: bool = True,
    strip_box_tokens: bool = True,
    max_chars: int | None = None,
) -> Cleaned:
    """The instruction in ``raw``; :class:`UnusableAnswer` if there is none."""
    text, reasoning = raw, None
    if strip_thinking:
        if THINK_CLOSE in text:
            before, _, text = text.rpartition(THINK_CLOSE)
            reasoning = before.replace(THINK_OPEN, "").strip() or None
        elif THINK_OPEN in text:
            raise UnusableAnswer(
                "ThinkingOnly",
                f"the answer never left its thinking ({len(raw)} characters, no {THINK_CLOSE})",
            )
        answer = ANSWER.search(text)
        if answer:
            text = answer.group(1)
    if strip_box_tokens:
        text = BOX_MARKERS.sub("", text)
    text = CONTROL_TOKENS.sub("", text).strip()
    if not text:
        kind = "ThinkingOnly" if reasoning else "EmptyAnswer"
        what = "only thinking text" if reasoning else "an empty answer"
        raise UnusableAnswer(kind, f"the model gave {what}")
    if max_chars is not None and len(text) > max_chars:
        raise UnusableAnswer(
            "AnswerTooLong",
            f"the answer has {len(text)} characters, more than max_answer_chars={max_chars}: "
            f"{text[:80]!r}...",
        )
    return Cleaned(text, reasoning)


__all__ = ["Cleaned", "UnusableAnswer", "clean_answer"]
