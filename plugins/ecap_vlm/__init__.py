"""Built-in VLM captioners (``vlm``, ``glm``, ``qwen3-vl``) and the backend layer they share
(:mod:`ecap_vlm.backends`). Nothing heavy is imported until a model is first used."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .backends import BUILT_IN_BACKENDS
from .captioner import VLMCaptioner
from .glm import GLMCaptioner
from .qwen import Qwen3VLCaptioner


@hookimpl
def register_captioners(register: Register) -> None:
    register("vlm", VLMCaptioner)
    register("glm", GLMCaptioner)
    register("qwen3-vl", Qwen3VLCaptioner)


@hookimpl
def register_vlm_backends(register: Register) -> None:
    for name, target in BUILT_IN_BACKENDS.items():
        register(name, target)
