"""What the VLM captioners promise before any model runs: light imports, configs that catch
mistakes with their location, cache keys that ignore throughput settings and secrets, answer
cleaning, and defaults for the paper's models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ecap.hashing import semantic_config
from ecap.vlm import backend_class, backend_names
from ecap_vlm.captioner import VLMCaptionerConfig
from ecap_vlm.cleaning import UnusableAnswer, clean_answer
from ecap_vlm.glm import GLMCaptionerConfig
from ecap_vlm.qwen import Qwen3VLCaptionerConfig

REPO = Path(__file__).resolve().parent.parent


def test_importing_the_plugin_and_every_backend_loads_no_heavy_library() -> None:
    code = (
        "import sys, ecap_vlm\n"
        "from ecap.vlm import backend_class\n"
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
    assert key(max_concurrent_calls=64, timeout=3, input_price=2.5) == base
    assert key(api_key="sk-secret") == base
    assert "sk-secret" not in str(key(api_key="sk-secret"))
    assert key(extra_body={"thinking": {"type": "enabled"}}) != base


def test_what_decides_which_weights_or_code_answer_is_in_the_cache_key() -> None:
    # Another server may serve other weights under the same model name.
    served = VLMCaptionerConfig(model="m", backend="openai-compatible")
    elsewhere = served.model_copy(
        update={"options": served.options.model_copy(update={"base_url": "http://other/v1"})}
    )
    assert semantic_config(elsewhere) != semantic_config(served)
    # Remote code decides what runs.
    local = VLMCaptionerConfig(model="m")
    trusted = VLMCaptionerConfig(model="m", options={"trust_remote_code": True})
    assert semantic_config(trusted) != semantic_config(local)


def test_the_options_schema_describes_each_backends_real_options() -> None:
    schema = VLMCaptionerConfig.model_json_schema()
    variants = {v["title"]: v for v in schema["properties"]["options"]["anyOf"]}
    assert {"TransformersOptions", "OpenAICompatibleOptions", "GeminiOptions"} <= set(variants)
    assert "base_url" in variants["OpenAICompatibleOptions"]["properties"]
    assert "dtype" in variants["TransformersOptions"]["properties"]
    gemini = next(
        t for t in schema["allOf"] if t["if"]["properties"]["backend"]["const"] == "gemini"
    )
    assert gemini["then"]["properties"]["options"]["title"] == "GeminiOptions"


def test_the_spec_schema_accepts_real_options(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from click.testing import CliRunner

    from ecap.cli import cli

    out = CliRunner().invoke(cli, ["schema", "--json"])
    assert out.exit_code == 0, out.output
    import json

    document = json.loads(out.output)
    step = {
        "caption": "vlm",
        "from": "pairs",
        "with": {"model": "m", "options": {"dtype": "bfloat16"}},
    }
    spec = {"steps": {"captions": step}}
    jsonschema.validate(spec, document)
    step["with"]["options"] = {"no_such_option": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, document)


def test_glm_defaults_to_zhipus_api_with_thinking_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIPU_API_KEY", "zhipu-key")
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    config = GLMCaptionerConfig()
    assert (config.model, config.backend) == ("glm-4.5v", "openai-compatible")
    options = config.options
    assert options.base_url == "https://open.bigmodel.cn/api/paas/v4"  # type: ignore[attr-defined]
    assert options.key(("OPENAI_API_KEY",)) == "zhipu-key"  # type: ignore[attr-defined]
    assert options.extra_body == {"thinking": {"type": "disabled"}}  # type: ignore[attr-defined]
    local = GLMCaptionerConfig(model="zai-org/GLM-4.5V", backend="transformers")
    assert local.control() == "chat-template"


def test_glm_keeps_zhipus_defaults_when_given_an_options_object() -> None:
    from ecap_vlm.backends.openai_compat import OpenAICompatibleOptions

    config = GLMCaptionerConfig(options=OpenAICompatibleOptions(timeout=30))
    assert config.options.base_url == "https://open.bigmodel.cn/api/paas/v4"  # type: ignore[attr-defined]
    assert config.options.api_key is None  # type: ignore[attr-defined]
    assert config.options.timeout == 30  # type: ignore[attr-defined]


def test_glm_thinking_control_api_needs_a_backend_that_can_send_the_field() -> None:
    with pytest.raises(ValidationError, match=r"thinking_control: api .* use chat-template"):
        GLMCaptionerConfig(model="zai-org/GLM-4.5V", backend="transformers", thinking_control="api")


def test_gemini_refuses_settings_it_would_silently_ignore() -> None:
    with pytest.raises(ValidationError, match="no repetition_penalty"):
        VLMCaptionerConfig(model="g", backend="gemini", sampling={"repetition_penalty": 1.1})
    with pytest.raises(ValidationError, match="no chat template"):
        VLMCaptionerConfig(model="g", backend="gemini", template_kwargs={"enable_thinking": False})


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
        # media and control tokens a small model may write are never part of an instruction
        ("Pan <|vision_start|>left<|video_pad|>.<|image_pad|>", "Pan left."),
    ],
)
def test_cleaning_keeps_only_the_instruction(raw: str, expected: str) -> None:
    assert clean_answer(raw).text == expected


def test_box_markers_survive_when_asked_to() -> None:
    raw = "<|begin_of_box|>Remove the sun.<|end_of_box|><|im_end|>"
    assert clean_answer(raw, strip_box_tokens=False).text == raw.removesuffix("<|im_end|>")


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
    from ecap.vlm import make_backend

    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    context = PluginContext(step_id="s", base_dir=tmp_path, work_dir=tmp_path)
    backend = make_backend(
        "openai-compatible", model="m", revision=None, options={}, context=context
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'editcaption\[api\]'"):
        asyncio.run(backend.send(None, 0))  # type: ignore[arg-type]


def test_every_backend_name_resolves_or_says_what_is_missing() -> None:
    for name in backend_names():
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


def context(tmp_path: Path) -> Any:
    from ecap.interfaces import PluginContext

    return PluginContext(step_id="s", base_dir=tmp_path, work_dir=tmp_path)


def test_a_missing_api_key_fails_before_any_call_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from ecap.errors import EcapError
    from ecap.vlm import make_backend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("EMPTY_KEY", "")  # what ${env:EMPTY_KEY:-} gives: unset, too
    for options in ({}, {"api_key_env": "EMPTY_KEY"}, {"api_key": ""}):
        backend = make_backend(
            "openai-compatible",
            model="m",
            revision=None,
            options=options,
            context=context(tmp_path),
        )
        with pytest.raises(EcapError, match=r"no API key: .*\$(OPENAI_API_KEY|EMPTY_KEY)"):
            asyncio.run(backend.generate([]))
    local = make_backend(
        "openai-compatible",
        model="m",
        revision=None,
        options={"base_url": "http://127.0.0.1:8000/v1"},
        context=context(tmp_path),
    )
    key = local.options.key(("OPENAI_API_KEY",))  # type: ignore[attr-defined]
    assert key == "EMPTY", "a server on this machine needs no key"
    elsewhere = make_backend(
        "openai-compatible",
        model="m",
        revision=None,
        options={"base_url": "https://gateway.example.com/v1"},
        context=context(tmp_path),
    )
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    with pytest.raises(EcapError, match="not the provider's own API"):
        asyncio.run(elsewhere.generate([]))  # OpenAI's key never goes to another server


def test_relative_model_and_processor_paths_resolve_against_the_spec_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecap.errors import EcapError
    from ecap.vlm import make_backend

    spec_dir, elsewhere = tmp_path / "spec", tmp_path / "cwd"
    for folder in (spec_dir / "weights", spec_dir / "proc", elsewhere / "only-here"):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"name": "{folder.name}"}}')
    monkeypatch.chdir(elsewhere)

    def identity(model: str, **options: Any) -> Any:
        backend = make_backend(
            "transformers", model=model, revision=None, options=options, context=context(spec_dir)
        )
        return backend.cache_identity()

    assert identity("weights").name == str(spec_dir / "weights")
    with pytest.raises(EcapError, match=r"'./only-here' does not exist .*spec's folder"):
        identity("./only-here")
    plain, with_processor = identity("weights"), identity("weights", processor="proc")
    assert with_processor.content_hash != plain.content_hash
    (spec_dir / "proc" / "preprocessor_config.json").write_text("{}")
    assert identity("weights", processor="proc").content_hash != with_processor.content_hash


def test_the_weights_hash_ignores_training_leftovers(tmp_path: Path) -> None:
    from ecap.models import folder_hash

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = folder_hash(tmp_path)
    (tmp_path / "optimizer.bin").write_bytes(b"adam")
    (tmp_path / "trainer_log.txt").write_text("step 1")
    (tmp_path / "checkpoint-100").mkdir()
    (tmp_path / "checkpoint-100" / "model.safetensors").write_bytes(b"older")
    assert folder_hash(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"new weights")
    assert folder_hash(tmp_path) != before


def test_candidates_token_counts_add_up_to_the_requests() -> None:
    from ecap.vlm import Generation

    generation = Generation(texts=("a", "b", "c"), tokens_in=100, tokens_out=31)
    shares = [generation.tokens_of(i) for i in range(3)]
    assert sum(s[0] for s in shares) == 100 and sum(s[1] for s in shares) == 31


def test_images_are_upright_rgb_and_must_be_the_imported_bytes(tmp_path: Path) -> None:
    import hashlib

    from PIL import Image

    from ecap.images import ImageChanged, prepare_image
    from ecap.records import ImageRef

    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # the camera was turned: the picture is 20 wide, 40 high
    image.save(path, exif=exif)
    ref = ImageRef(uri=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    prepared = prepare_image(ref)
    assert prepared.mime == "image/png"
    assert prepared.decoded().size == (20, 40)

    Image.new("RGB", (40, 20), "blue").save(path)
    with pytest.raises(ImageChanged, match="changed on disk since it was imported"):
        prepare_image(ref)
