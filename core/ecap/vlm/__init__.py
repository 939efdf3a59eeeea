"""The public VLM API: one contract for running a vision-language model, whatever serves it.

Captioners, the EditScore filter, sampling from a trained model, and third-party plugins all run
VLMs through this module and never through a backend's own module::

    from ecap.vlm import Sampling, VLMRequest, make_backend

    backend = make_backend("transformers", model="Qwen/Qwen3-VL-8B-Instruct", revision=None,
                           options={"dtype": "bfloat16"}, context=plugin_context)
    outcomes = await backend.generate([VLMRequest(prompt=..., source=..., target=..., ...)])

Backends are plugins: a package's ``register_vlm_backends(register)`` hook registers each one by
name, lazily (``register("mine", "my_package.backend:MyBackend")``), exactly as the built-in
transformers, vLLM, OpenAI-compatible and Gemini backends are registered. See
:mod:`ecap.vlm.contract` for what a backend must do.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import EcapError, did_you_mean
from ..interfaces import PluginContext
from ..models import ModelIdentity
from .contract import (
    TRUNCATED,
    BackendOptions,
    Generation,
    ImageInput,
    LocalBackend,
    Outcome,
    Sampling,
    VLMBackend,
    VLMRequest,
)


def backend_names() -> list[str]:
    """The names ``backend:`` may take, from every installed plugin."""
    from ..plugins import get_registry

    return sorted(get_registry().vlm_backends)


def backend_class(name: str) -> type[VLMBackend]:
    """The class registered as ``name``, imported now (and only now)."""
    from ..plugins import get_registry

    registry = get_registry()
    registration = registry.vlm_backends.get(name)
    if registration is None:
        raise EcapError(
            f"unknown VLM backend {name!r}{did_you_mean(name, sorted(registry.vlm_backends))}; "
            f"installed: {', '.join(sorted(registry.vlm_backends)) or 'none'}"
        )
    target = registration.target
    if isinstance(target, str):
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise EcapError(
                f"VLM backend {name!r} ({registration.package}) is not available: "
                f"{module_name} is missing"
            ) from exc
        target = getattr(module, class_name, None)
    if not (isinstance(target, type) and issubclass(target, VLMBackend)):
        raise EcapError(
            f"VLM backend {name!r} from {registration.package} is not a ecap.vlm.VLMBackend"
        )
    return target


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


__all__ = [
    "TRUNCATED",
    "BackendOptions",
    "Generation",
    "ImageInput",
    "LocalBackend",
    "ModelIdentity",
    "Outcome",
    "Sampling",
    "VLMBackend",
    "VLMRequest",
    "backend_class",
    "backend_names",
    "make_backend",
    "validate_options",
]
