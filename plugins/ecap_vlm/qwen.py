"""The ``qwen3-vl`` captioner: Qwen3-VL models by size, on the transformers backend by default.

``model`` takes a hub id, a local folder (a fine-tuned checkpoint), or a short name for the
published models: ``8B`` is ``Qwen/Qwen3-VL-8B-Instruct``, ``32B-Thinking`` is
``Qwen/Qwen3-VL-32B-Thinking``, ``30B-A3B-Instruct-FP8`` is ``Qwen/Qwen3-VL-30B-A3B-Instruct-FP8``.
Thinking variants' reasoning is stripped from the answer like any other model's.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .captioner import VLMCaptioner, VLMCaptionerConfig

SHORT_NAME = re.compile(
    r"^(?P<size>\d+B(?:-A\d+B)?)(?:-(?P<variant>Instruct|Thinking))?(?P<fp8>-FP8)?$",
    re.IGNORECASE,
)


def expand_model(name: str) -> str:
    """A short Qwen3-VL name as its hub id; anything else unchanged."""
    match = SHORT_NAME.match(name)
    if not match:
        return name
    variant = (match["variant"] or "Instruct").capitalize()
    fp8 = "-FP8" if match["fp8"] else ""
    return f"Qwen/Qwen3-VL-{match['size'].upper()}-{variant}{fp8}"


class Qwen3VLCaptionerConfig(VLMCaptionerConfig):
    model: str = Field(
        "Qwen/Qwen3-VL-8B-Instruct",
        description="hub id, local folder, or a short name such as 8B or 32B-Thinking",
    )

    @field_validator("model")
    @classmethod
    def _short_name(cls, value: str) -> str:
        return expand_model(value)


class Qwen3VLCaptioner(VLMCaptioner):
    """Qwen3-VL, base or fine-tuned."""

    Config = Qwen3VLCaptionerConfig
    config: Qwen3VLCaptionerConfig


__all__ = ["Qwen3VLCaptioner", "Qwen3VLCaptionerConfig", "expand_model"]
