"""The built-in VLM backends, registered through ``register_vlm_backends`` like a third party's.

Each is named by ``module:Class`` so that its module (and torch, vLLM or an SDK with it) is imported
only when a spec uses it. The contract they implement is :mod:`ecap.vlm`.
"""

from __future__ import annotations

BUILT_IN_BACKENDS: dict[str, str] = {
    "transformers": "ecap_vlm.backends.transformers:TransformersBackend",
    "vllm": "ecap_vlm.backends.vllm:VLLMBackend",
    "openai-compatible": "ecap_vlm.backends.openai_compat:OpenAICompatibleBackend",
    "gemini": "ecap_vlm.backends.gemini:GeminiBackend",
}

__all__ = ["BUILT_IN_BACKENDS"]
