"""The VLM backends, by the name a spec gives them (``backend:``), imported only when used.

Adding a backend is one line here: its name and the ``module:Class`` that implements
:class:`ecap_vlm.backends.base.VLMBackend`. Modules must not import torch, vLLM or an SDK at
import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ecap.errors import EcapError
from ecap.interfaces import PluginContext

from .base import BackendOptions, VLMBackend

BACKENDS: dict[str, str] = {
    "transformers": "ecap_vlm.backends.transformers:TransformersBackend",
    "vllm": "ecap_vlm.backends.vllm:VLLMBackend",
    "openai-compatible": "ecap_vlm.backends.openai_compat:OpenAICompatibleBackend",
    "gemini": "ecap_vlm.backends.gemini:GeminiBackend",
}


def backend_class(name: str) -> type[VLMBackend]:
    """The class registered as ``name``."""
    if name not in BACKENDS:
        raise EcapError(f"unknown VLM backend {name!r}; choose one of {sorted(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise EcapError(f"VLM backend {name!r} is not available: {module_name} is missing") from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, VLMBackend)):
        raise EcapError(f"{BACKENDS[name]} is not a VLMBackend")
    return cls


def validate_options(name: str, options: Mapping[str, Any] | BackendOptions) -> BackendOptions:
    """``options`` checked against the backend's own model."""
    cls = backend_class(name)
    if isinstance(options, cls.Options):
        return options
    data = options.model_dump() if isinstance(options, BackendOptions) else dict(options)
    return cls.Options.model_validate(data)


def make_backend(
    name: str,
    *,
    model: str,
    revision: str | None,
    options: Mapping[str, Any] | BackendOptions,
    context: PluginContext,
) -> VLMBackend:
    """Build backend ``name`` for ``model``; nothing heavy happens until its first use."""
    cls = backend_class(name)
    return cls(model, revision, validate_options(name, options), context)


__all__ = ["BACKENDS", "backend_class", "make_backend", "validate_options"]
