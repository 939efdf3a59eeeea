"""Test helpers for ecap and for plugin authors; also a pytest plugin (entry point ``pytest11``).

- :mod:`ecap.testing.fakes`: a captioner, filter, judge and annotator with scripted outputs and a
  call history, registered under the name ``fake`` through the same hooks as any plugin.
- :class:`FakeLLMServer` (:mod:`ecap.testing.servers`): a local server speaking the Gemini and
  OpenAI REST protocols to their real SDKs, with scripted answers and injectable faults.
- :func:`make_pairs`: tiny real PNG pairs and a CSV listing them (optionally corrupt ones).
- :func:`run_spec` runs a spec without progress bars; :func:`query_store` and
  :func:`count_api_calls` read rows back; :func:`kill_run_when` SIGKILLs a run part-way.
- :mod:`ecap.testing.tiny_vlm`: tiny random Qwen3-VL, Qwen2.5-VL and GLM-4.5V models with real
  tokenizers and processors, saved for ``from_pretrained`` (``python -m ecap.testing.tiny_vlm``).
- Fixtures (see :mod:`ecap.testing.pytest_plugin`): ``ecap_store`` (a temporary store),
  ``ecap_registry`` (the installed plugins plus the fakes), ``ecap_pairs`` (pairs and their CSV),
  ``fake_llm_server``, ``tiny_vlm`` and ``tiny_qwen3_vl`` / ``tiny_qwen25_vl`` / ``tiny_glm45v``.

Every installation loads the pytest plugin into every pytest run of its environment, ecap's or
not, and that plugin imports this package. So ``import ecap.testing`` imports nothing: each name
below is loaded from its module on first use (``from ecap.testing import FakeLLMServer`` imports
the fake server then, and only then), and the store, SQLAlchemy and the servers stay unloaded in
a test suite that never asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .fakes import (
        FakeAnnotator,
        FakeCaptioner,
        FakeFilter,
        FakeJudge,
        FakeTrainer,
        reset_fakes,
    )
    from .helpers import (
        count_api_calls,
        kill_run_when,
        make_pairs,
        query_store,
        registry_with_fakes,
        run_spec,
        start_step_run,
    )
    from .servers import FakeLLMServer, LLMError, LLMReply, LLMRequest

#: Where each public name lives.
_HOMES = {
    "FakeAnnotator": "fakes",
    "FakeCaptioner": "fakes",
    "FakeFilter": "fakes",
    "FakeJudge": "fakes",
    "FakeTrainer": "fakes",
    "reset_fakes": "fakes",
    "FakeLLMServer": "servers",
    "LLMError": "servers",
    "LLMReply": "servers",
    "LLMRequest": "servers",
    "count_api_calls": "helpers",
    "kill_run_when": "helpers",
    "make_pairs": "helpers",
    "query_store": "helpers",
    "registry_with_fakes": "helpers",
    "run_spec": "helpers",
    "start_step_run": "helpers",
}


__getattr__ = lazy_attributes(__name__, _HOMES)


__all__ = [
    "FakeAnnotator",
    "FakeCaptioner",
    "FakeFilter",
    "FakeJudge",
    "FakeLLMServer",
    "FakeTrainer",
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
    "start_step_run",
]
