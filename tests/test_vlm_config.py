"""What the VLM captioners promise before any model runs: light imports, configs that catch
mistakes with their location, cache keys that ignore throughput settings and secrets, answer
cleaning, and defaults for the paper's models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ecap.hashing import semantic_config
from ecap_vlm.backends import BACKENDS, backend_class
from ecap_vlm.captioner import VLMCaptionerConfig
from ecap_vlm.cleaning import UnusableAnswer, clean_answer
from ecap_vlm.glm import GLMCaptionerConfig
from ecap_vlm.qwen import Qwen3VLCaptionerConfig

REPO = Path(__file__).resolve().parent.parent


def test_importing_the_plugin_and_every_backend_loads_no_heavy_library() -> None:
    code = (
        "import sys, ecap_vlm\n"
        "from ecap_vlm.backends import backend_class\n"
        "for name in ('transformers', 'openai-compatible', 'gemini'): backend_class(name)\n"
        "heavy = {'torch', 'transformers', 'openai', 'google.genai', 'vllm'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_plugins_are_registered_under_their_names(ecap_registry) -> None:
    names = set(ecap_registry.names("caption"))
    assert {"vlm", "glm", "qwen3-vl"} <= names


def test_backend_options_are_checked_against_the_chosen_backend() -> None:
    with pytest.raises(ValidationError) as wrong:
        VLMCaptionerConfig(model="m", backend="transformers", options={"base_url": "http://x"})
    assert "options.base_url" in str(wrong.value)
    with pytest.raises(ValidationError) as unknown:
        VLMCaptionerConfig(model="m", backend="tgi")
    assert "unknown backend 'tgi'" in str(unknown.value)
    config = VLMCaptionerConfig(model="m", backend="openai-compatible", options={"timeout": 5})
    assert type(config.options).__name__ == "OpenAICompatibleOptions"
    assert config.model_dump()["options"]["timeout"] == 5


def test_prompt_placeholders_and_greedy_candidates_are_caught_early() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder\(s\) \{colour\}"):
        VLMCaptionerConfig(model="m", prompt="Describe the {colour} change.")
    with pytest.raises(ValidationError, match=r"n=4 candidates need sampling\.temperature > 0"):
        VLMCaptionerConfig(model="m", n=4)


def test_throughput_settings_and_secrets_stay_out_of_the_cache_key() -> None:
    def key(**options: object) -> object:
        config = VLMCaptionerConfig(model="m", backend="openai-compatible", options=options)
        return semantic_config(config)

    base = key()
    assert key(max_concurrent_calls=64, timeout=3, base_url="http://other/v1") == base
    assert key(api_key="sk-secret") == base
    assert "sk-secret" not in str(key(api_key="sk-secret"))
    assert key(extra_body={"thinking": {"type": "enabled"}}) != base


def test_glm_defaults_to_zhipus_api_with_thinking_off() -> None:
    config = GLMCaptionerConfig()
    assert (config.model, config.backend) == ("glm-4.5v", "openai-compatible")
    options = config.options
    assert options.base_url == "https://open.bigmodel.cn/api/paas/v4"  # type: ignore[attr-defined]
    assert options.api_key_env == "ZHIPU_API_KEY"  # type: ignore[attr-defined]
    assert options.extra_body == {"thinking": {"type": "disabled"}}  # type: ignore[attr-defined]
    local = GLMCaptionerConfig(model="zai-org/GLM-4.5V", backend="transformers")
    assert local.control() == "chat-template"


def test_qwen3_vl_short_names_expand_to_hub_ids() -> None:
    assert Qwen3VLCaptionerConfig().model == "Qwen/Qwen3-VL-8B-Instruct"
    assert Qwen3VLCaptionerConfig(model="32b-thinking").model == "Qwen/Qwen3-VL-32B-Thinking"
    assert Qwen3VLCaptionerConfig(model="30B-A3B-FP8").model == "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"
    assert Qwen3VLCaptionerConfig(model="./my-sft").model == "./my-sft"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Turn the ball blue.<|im_end|>", "Turn the ball blue."),
        ("<think>left vs right</think>\nAdd a tree on the left.", "Add a tree on the left."),
        ("<|begin_of_box|>Remove the sun.<|end_of_box|>", "Remove the sun."),
        ("<think>x</think><answer>Make it night.</answer>", "Make it night."),
    ],
)
def test_cleaning_keeps_only_the_instruction(raw: str, expected: str) -> None:
    assert clean_answer(raw).text == expected


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("", "EmptyAnswer"),
        ("<|endoftext|>", "EmptyAnswer"),
        ("<think>the sun is gone, so", "ThinkingOnly"),
        ("<think>the sun is gone</think>  ", "ThinkingOnly"),
        ("word " * 500, "AnswerTooLong"),
    ],
)
def test_unusable_answers_say_why(raw: str, kind: str) -> None:
    with pytest.raises(UnusableAnswer) as error:
        clean_answer(raw, max_chars=2000)
    assert error.value.kind == kind


def test_a_missing_extra_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from ecap.errors import MissingExtraError
    from ecap.interfaces import PluginContext
    from ecap_vlm.backends import make_backend

    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    context = PluginContext(step_id="s", base_dir=tmp_path, work_dir=tmp_path)
    backend = make_backend(
        "openai-compatible", model="m", revision=None, options={}, context=context
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'editcaption\[api\]'"):
        asyncio.run(backend.send(None, 0))  # type: ignore[arg-type]


def test_every_backend_name_resolves_or_says_what_is_missing() -> None:
    for name in BACKENDS:
        if name == "vllm":
            continue  # provided by its own module; see tests/test_vlm_vllm*.py
        assert backend_class(name).name == name


def test_every_captioner_of_the_paper_is_reachable_by_config_alone() -> None:
    from ecap.spec import load_spec
    from ecap.testing import registry_with_fakes

    spec = load_spec(REPO / "examples" / "paper" / "captioners.yaml", registry_with_fakes())
    steps = {step.id: step.config for step in spec.steps.values() if step.kind == "caption"}
    models = {
        step: (config.model, config.backend)  # type: ignore[attr-defined]
        for step, config in steps.items()
    }
    assert models == {
        "glm45v": ("glm-4.5v", "openai-compatible"),
        "glm45v_local": ("zai-org/GLM-4.5V", "vllm"),
        "qwen3vl_base": ("Qwen/Qwen3-VL-32B-Instruct", "vllm"),
        "qwen3vl_sft": ("checkpoints/qwen3-vl-32b-sft", "vllm"),
        "gemini3pro": ("gemini-3-pro-preview", "gemini"),
        "gpt41": ("gpt-4.1", "openai-compatible"),
        "kimi": ("kimi-k2.5", "openai-compatible"),
        "qwen35": ("qwen3.5-plus", "openai-compatible"),
    }
