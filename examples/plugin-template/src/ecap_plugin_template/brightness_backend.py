"""The ``template-brightness`` VLM backend: a model-free backend that shows the contract.

It "answers" every request by comparing the mean brightness of the source and target images, so
a spec can caption with ``backend: template-brightness`` on any machine. A real backend would run
a model here; everything around it (registration, options, outcomes, identity) is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from ecap.vlm import BackendOptions, Generation, LocalBackend, Outcome, VLMRequest
from pydantic import Field


class BrightnessOptions(BackendOptions):
    threshold: float = Field(
        2.0, ge=0, description="mean brightness difference (0-255) below which nothing changed"
    )


class BrightnessBackend(LocalBackend):
    """Says whether the target is brighter or darker than the source."""

    name = "template-brightness"
    Options = BrightnessOptions
    options: BrightnessOptions

    def generate_batch(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: VLMRequest) -> Generation:
        change = _mean(request.target) - _mean(request.source)
        if change > self.options.threshold:
            text = "Make the whole image brighter."
        elif change < -self.options.threshold:
            text = "Make the whole image darker."
        else:
            text = "Keep the image as it is."
        return Generation(texts=(text,) * request.n, finish_reasons=("stop",) * request.n)


def _mean(image: object) -> float:
    pixels = image.decoded().convert("L")  # type: ignore[attr-defined]
    histogram = pixels.histogram()
    return sum(value * count for value, count in enumerate(histogram)) / max(1, sum(histogram))
