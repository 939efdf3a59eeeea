"""Test helpers for ecap and for plugin authors; also a pytest plugin (entry point ``pytest11``).

- :mod:`ecap.testing.fakes`: a captioner, filter, judge and annotator with scripted outputs and a
  call history, registered under the name ``fake`` through the same hooks as any plugin.
- :class:`FakeLLMServer` (:mod:`ecap.testing.llm_server`): a local server speaking the Gemini and
  OpenAI REST protocols to their real SDKs, with scripted answers and injectable faults.
- :func:`make_pairs`: tiny real PNG pairs and a CSV listing them (optionally corrupt ones).
- :func:`run_spec` runs a spec without progress bars; :func:`query_store` and
  :func:`count_api_calls` read rows back; :func:`kill_run_when` SIGKILLs a run part-way.
- :mod:`ecap.testing.tiny_vlm`: tiny random Qwen3-VL, Qwen2.5-VL and GLM-4.5V models with real
  tokenizers and processors, saved for ``from_pretrained`` (``python -m ecap.testing.tiny_vlm``).
- Fixtures (see :mod:`ecap.testing.pytest_plugin`): ``ecap_store`` (a temporary store),
  ``ecap_registry`` (the installed plugins plus the fakes), ``ecap_pairs`` (pairs and their CSV),
  ``fake_llm_server``, ``tiny_vlm`` and ``tiny_qwen3_vl`` / ``tiny_qwen25_vl`` / ``tiny_glm45v``.
"""

from .fakes import FakeAnnotator, FakeCaptioner, FakeFilter, FakeJudge, reset_fakes
from .helpers import (
    count_api_calls,
    kill_run_when,
    make_pairs,
    query_store,
    registry_with_fakes,
    run_spec,
)
from .llm_server import FakeLLMServer, LLMError, LLMReply, LLMRequest

__all__ = [
    "FakeAnnotator",
    "FakeCaptioner",
    "FakeFilter",
    "FakeJudge",
    "FakeLLMServer",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "count_api_calls",
    "kill_run_when",
    "make_pairs",
    "query_store",
    "registry_with_fakes",
    "reset_fakes",
    "run_spec",
]
