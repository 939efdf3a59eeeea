"""The editscore filter: reading answers, rescaling, avg@N with seeds, failures that are recorded
instead of guessed, keep rules on exact numbers, which model each backend gets, where the
prompts come from, and a tiny Qwen2.5-VL with a LoRA adapter end to end through transformers."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from ecap.errors import EcapError
from ecap.hookspecs import Register, hookimpl
from ecap.interfaces import PluginContext
from ecap.plugins import Registry, build_registry, set_registry
from ecap.records import ImageRef, Instruction, Item, Pair, SampleError, Score
from ecap.testing.fakes import FakePlugins
from ecap.vlm import BackendOptions, Generation, Outcome, VLMBackend, VLMRequest
from ecap_editscore.answers import UnusableAnswer, parse_answer
from ecap_editscore.filter import EditScoreConfig, EditScoreFilter
from ecap_editscore.prompts import from_package

#: Prompts written for these tests, with the placeholder structure the checkpoints' own use.
TEST_PROMPTS = {
    "semantic_consistency": (
        "Two pictures follow: an original and an edited copy of it. Grade the edit. Answer "
        'with JSON only: {"reasoning": "<short>", "score": [a, b]}, where a (0 to 25) says how '
        "completely the edit carries out the instruction and b (0 to 25) how little else "
        "changed.\nInstruction: <instruction>"
    ),
    "perceptual_quality": (
        "Grade how natural the edited picture looks. Answer with JSON only: "
        '{"reasoning": "<short>", "score": [naturalness, clean]}, both 0 to 25.'
    ),
}


def reply(scores: list[object], reasoning: str = "ok") -> str:
    return json.dumps({"reasoning": reasoning, "score": scores})


class ScriptedBackend(VLMBackend):
    """Answers from :attr:`script`: ``(prompt kind, instruction or None, seed) -> text``.

    Registered through the ``register_vlm_backends`` hook like any backend; every request it
    receives is appended to :attr:`requests`, so tests count model calls.
    """

    name = "scripted"
    script: ClassVar[Callable[[str, str | None, int], str]]
    requests: ClassVar[list[VLMRequest]] = []
    truncate: ClassVar[set[int]] = set()

    async def generate(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for request in requests:
            type(self).requests.append(request)
            kind, instruction = "quality", None
            if "Instruction: " in request.prompt:
                kind, instruction = "consistency", request.prompt.rsplit("Instruction: ", 1)[1]
            seeds = [(request.sampling.seed or 0) + i for i in range(request.n)]
            outcomes.append(
                Generation(
                    texts=tuple(type(self).script(kind, instruction, s) for s in seeds),
                    finish_reasons=tuple(
                        "length" if s in type(self).truncate else "stop" for s in seeds
                    ),
                )
            )
        return outcomes


class AdapterOptions(BackendOptions):
    lora: str | None = None


class ScriptedLocalBackend(ScriptedBackend):
    """The same, but taking a LoRA adapter the way the transformers and vLLM backends do."""

    name = "scripted-local"
    Options = AdapterOptions


class ScriptedBackends:
    @hookimpl
    def register_vlm_backends(self, register: Register) -> None:
        register("scripted", ScriptedBackend)
        register("scripted-local", ScriptedLocalBackend)


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = build_registry(
        extra_plugins=[("ecap-testing-fakes", FakePlugins()), ("scripted", ScriptedBackends())]
    )
    set_registry(registry)
    ScriptedBackend.requests = []
    ScriptedBackend.truncate = set()
    try:
        yield registry
    finally:
        set_registry(None)


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.yaml"
    path.write_text(json.dumps(TEST_PROMPTS))
    return path


def context(base_dir: Path) -> PluginContext:
    return PluginContext(step_id="editscore", base_dir=base_dir, work_dir=base_dir)


def editscore(registry, prompt_file: Path, **config: object) -> EditScoreFilter:
    settings = {"model": "editscore-7b", "backend": "scripted", "prompt_file": str(prompt_file)}
    settings.update(config)
    return EditScoreFilter(EditScoreConfig.model_validate(settings), context(prompt_file.parent))


def make_item(folder: Path, text: str, name: str = "p", category: str | None = None) -> Item:
    from PIL import Image

    refs = []
    for side, colour in (("source", (200, 30, 30)), ("target", (30, 30, 200))):
        path = folder / f"{name}-{side}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        refs.append(ImageRef(uri=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    pair = Pair.of(refs[0], refs[1], category=category)
    return Item(pair=pair, instruction=Instruction(pair_id=pair.id, text=text, origin="model"))


def run(plugin: EditScoreFilter, items: list[Item]) -> list[Score | SampleError]:
    return asyncio.run(plugin.ascore(items))


# -- reading answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "the hat is red now", "score": [20, 15]}',
        '```json\n{"reasoning": "the hat is red now", "score": [20, 15]}\n```',
        'Here you go: {"reasoning": "the hat is red now", "score": [20, 15]} Done.',
        '<think>look closely</think>{"reasoning": "the hat is red now", "score": ["20", 15.0]}',
        "{\u201creasoning\u201d: \u201cthe hat is red now\u201d, \u201cscore\u201d: [20, 15]}",
        # an unescaped quote breaks the JSON; the score list is still the model's own answer
        '{"reasoning": "the "hat" is red now", "score": [20, 15]}',
    ],
)
def test_answers_are_read_through_fences_thinking_and_broken_reasoning(text):
    answer = parse_answer(text, 25, "semantic_consistency")
    assert answer.scores == (20.0, 15.0)
    assert "hat" in answer.reasoning


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("The edit looks good, 8/10.", "UnparsableAnswer", "semantic_consistency: no JSON object"),
        ('{"reasoning": "fine"}', "UnparsableAnswer", 'semantic_consistency: no "score"'),
        ('{"score": [20]}', "UnparsableAnswer", "semantic_consistency.score: expected a list of"),
        ('{"score": 20}', "UnparsableAnswer", "semantic_consistency.score: expected a list of"),
        ('{"score": [20, "high"]}', "UnparsableAnswer", "semantic_consistency.score[1]: not a"),
        ('{"score": [true, 3]}', "UnparsableAnswer", "semantic_consistency.score[0]: not a"),
        ('{"score": [26, 3]}', "OutOfRange", "semantic_consistency.score[0]: outside 0..25"),
        ('{"score": [3, -1]}', "OutOfRange", "semantic_consistency.score[1]: outside 0..25"),
        ('{"reasoning": "x", "score": [3, oops]', "UnparsableAnswer", "no JSON object"),
        ('{"reasoning": "x" "score": [3, oops]}', "UnparsableAnswer", ".score: not a list of"),
    ],
)
def test_unusable_answers_name_the_field_and_the_value(text, kind, message):
    with pytest.raises(UnusableAnswer) as caught:
        parse_answer(text, 25, "semantic_consistency")
    assert caught.value.kind == kind
    assert str(caught.value).startswith(message) or message in str(caught.value)
    assert "(got " in str(caught.value)


# -- scoring with a scripted backend ---------------------------------------------------------------


def test_scores_are_rescaled_from_0_25_to_0_10_and_combined_as_editscore_does(
    registry, prompt_file, tmp_path
):
    ScriptedBackend.script = staticmethod(
        lambda kind, _, seed: (
            reply([20, 15], "hat is red") if kind == "consistency" else reply([25, 10], "some blur")
        )
    )
    [score] = run(editscore(registry, prompt_file), [make_item(tmp_path, "Make the hat red.")])
    assert isinstance(score, Score)
    assert score.values == pytest.approx(
        {
            "prompt_following": 8.0,  # 20 / 2.5
            "consistency": 6.0,  # 15 / 2.5
            "perceptual_quality": 4.0,  # min(25, 10) / 2.5
            "overall": math.sqrt(6.0 * 4.0),  # sqrt(min(PF, C) * PQ)
        }
    )
    assert score.meta["reasoning"] == "hat is red"
    assert score.meta["samples"][0]["quality_reasoning"] == "some blur"
    assert score.meta["seeds"] == [42]
    assert score.meta["prompts"] == str(prompt_file)
    [consistency, quality] = ScriptedBackend.requests
    assert consistency.prompt.endswith("Instruction: Make the hat red.")
    assert quality.prompt == TEST_PROMPTS["perceptual_quality"]
    assert (consistency.source_label, consistency.target_label) == ("<img1>: ", "<img2>: ")
    assert consistency.sampling.temperature == 0.7 and consistency.sampling.top_k == 20


def test_a_checkpoint_on_another_scale_is_rescaled_by_its_range(registry, prompt_file, tmp_path):
    ScriptedBackend.script = staticmethod(lambda kind, _, seed: reply([7, 10]))
    plugin = editscore(registry, prompt_file, score_range=10)
    [score] = run(plugin, [make_item(tmp_path, "Make the hat red.")])
    assert score.values["prompt_following"] == 7.0


def test_avg_at_n_draws_each_sample_with_its_own_seed_and_averages_each_component(
    registry, prompt_file, tmp_path
):
    consistency = {42: [10, 20], 43: [15, 25], 44: [20, 0]}
    quality = {42: [25, 25], 43: [5, 25], 44: [25, 20]}
    ScriptedBackend.script = staticmethod(
        lambda kind, _, seed: reply((consistency if kind == "consistency" else quality)[seed])
    )
    plugin = editscore(registry, prompt_file, samples=3)
    [score] = run(plugin, [make_item(tmp_path, "Make the hat red.")])
    assert score.meta["seeds"] == [42, 43, 44]
    assert [s["seed"] for s in score.meta["samples"]] == [42, 43, 44]
    assert score.values["prompt_following"] == pytest.approx((4 + 6 + 8) / 3)
    assert score.values["consistency"] == pytest.approx((8 + 10 + 0) / 3)
    assert score.values["perceptual_quality"] == pytest.approx((10 + 2 + 8) / 3)
    overall = [math.sqrt(4 * 10), math.sqrt(6 * 2), math.sqrt(0 * 8)]
    assert score.values["overall"] == pytest.approx(sum(overall) / 3)
    assert [r.n for r in ScriptedBackend.requests] == [3, 3]  # one request per prompt


def test_one_unusable_sample_fails_the_pair_with_field_value_and_seed(
    registry, prompt_file, tmp_path
):
    ScriptedBackend.script = staticmethod(
        lambda kind, _, seed: (
            reply([30, 3]) if (kind, seed) == ("consistency", 43) else reply([5, 5])
        )
    )
    [result] = run(editscore(registry, prompt_file, samples=2), [make_item(tmp_path, "Hat red.")])
    assert isinstance(result, SampleError)
    assert result.error_type == "OutOfRange"
    assert result.message == (
        "sample 1 (seed 43): semantic_consistency.score[0]: outside 0..25 (got '30')"
    )


def test_a_malformed_quality_answer_is_a_failure_not_a_guess(registry, prompt_file, tmp_path):
    ScriptedBackend.script = staticmethod(
        lambda kind, _, seed: reply([20, 20]) if kind == "consistency" else "Looks natural!"
    )
    items = [make_item(tmp_path, "Make the hat red.")]
    [result] = run(editscore(registry, prompt_file), items)
    assert isinstance(result, SampleError)
    assert result.error_type == "UnparsableAnswer"
    assert "perceptual_quality: no JSON object in the answer (got 'Looks natural!')" in (
        result.message
    )


def test_a_truncated_answer_is_a_failure(registry, prompt_file, tmp_path):
    ScriptedBackend.script = staticmethod(lambda kind, _, seed: '{"reasoning": "the ha')
    ScriptedBackend.truncate = {42}
    [result] = run(editscore(registry, prompt_file), [make_item(tmp_path, "Hat red.")])
    assert isinstance(result, SampleError) and result.error_type == "Truncated"


def test_without_the_quality_prompt_only_the_instruction_components_are_scored(
    registry, prompt_file, tmp_path
):
    ScriptedBackend.script = staticmethod(lambda kind, _, seed: reply([20, 15]))
    plugin = editscore(registry, prompt_file, perceptual_quality=False)
    [score] = run(plugin, [make_item(tmp_path, "Make the hat red.")])
    assert score.values == {"prompt_following": 8.0, "consistency": 6.0}
    assert len(ScriptedBackend.requests) == 1
    with pytest.raises(ValidationError, match="keep reads overall, which this filter does not"):
        editscore(
            registry,
            prompt_file,
            perceptual_quality=False,
            keep={"min_score": 5, "component": "overall"},
        )


def test_an_unreadable_image_or_missing_instruction_fails_alone(registry, prompt_file, tmp_path):
    ScriptedBackend.script = staticmethod(lambda kind, _, seed: reply([20, 15]))
    good = make_item(tmp_path, "Make the hat red.", "good")
    broken = make_item(tmp_path, "Make the hat red.", "broken")
    Path(broken.pair.target.uri).write_bytes(b"not a png")
    bare = Item(pair=good.pair)
    results = run(editscore(registry, prompt_file), [broken, good, bare])
    assert [type(r).__name__ for r in results] == ["SampleError", "Score", "SampleError"]
    assert results[0].error_type == "ImageChanged"
    assert results[2].error_type == "NoInstruction"


def test_config_refuses_greedy_avg_at_n_and_an_adapter_in_options(registry, prompt_file):
    with pytest.raises(ValidationError, match=r"needs sampling\.temperature > 0"):
        editscore(registry, prompt_file, samples=4, sampling={"temperature": 0})
    with pytest.raises(ValidationError, match="the adapter is `model:`"):
        editscore(registry, prompt_file, backend="scripted-local", options={"lora": "x"})
    with pytest.raises(ValidationError, match="unknown backend"):
        editscore(registry, prompt_file, backend="nope")


# -- keep rules on exact numbers ------------------------------------------------------------------


def scored_items(registry, prompt_file, tmp_path, rule: dict) -> tuple[list[Item], list]:
    following = {"a1": 24, "a2": 15, "a3": 12.5, "b1": 10, "b2": 5}
    ScriptedBackend.script = staticmethod(
        lambda kind, text, seed: reply([following.get(text, 25), 25])
    )
    plugin = editscore(registry, prompt_file, keep=rule)
    items = [make_item(tmp_path, name, name, category=name[0]) for name in following]
    scores = run(plugin, items)
    with_scores = [i.model_copy(update={"score": s}) for i, s in zip(items, scores, strict=True)]
    return with_scores, plugin.decide(with_scores)


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        ({"min_score": 5.0}, ["a1", "a2", "a3"]),  # PF 9.6, 6, 5, 4, 2
        ({"min_score": 6.0}, ["a1", "a2"]),
        ({"max_score": 5.0}, ["a3", "b1", "b2"]),
        ({"top_k": 1}, ["a1", "b1"]),
        ({"top_p": 0.5}, ["a1", "a2", "b1"]),
        ({"percentile": 50}, ["a1", "a2", "a3"]),
        ({"min_score": 8, "component": "consistency"}, ["a1", "a2", "a3", "b1", "b2"]),
        ({"all_of": [{"top_k": 2}, {"min_score": 5.5}]}, ["a1", "a2"]),
        ({"any_of": [{"top_k": 1}, {"min_score": 5.5}]}, ["a1", "a2", "b1"]),
    ],
)
def test_keep_rules_on_prompt_following_by_default(registry, prompt_file, tmp_path, rule, kept):
    items, decisions = scored_items(registry, prompt_file, tmp_path, rule)
    assert [i.instruction.text for i, d in zip(items, decisions, strict=True) if d.keep] == kept


def test_a_dropped_row_says_why(registry, prompt_file, tmp_path):
    _, decisions = scored_items(registry, prompt_file, tmp_path, {"min_score": 5.0})
    assert decisions[-1].reason == "prompt_following 2 < min 5"


# -- which model each backend gets ----------------------------------------------------------------


def test_a_backend_taking_an_adapter_gets_the_base_and_the_adapter(registry, prompt_file):
    adapter = prompt_file.parent / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    plugin = editscore(
        registry,
        prompt_file,
        backend="scripted-local",
        model="./adapter",
        base_model="Qwen/Qwen2.5-VL-7B-Instruct",
    )
    backend = plugin.backend
    assert backend.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert backend.options.lora == str(adapter.resolve())


def test_an_adapter_a_train_step_made_brings_its_base(registry, prompt_file):
    from ecap.models import ModelIdentity, ResolvedModel, StepModel

    trained = ResolvedModel(
        path="/runs/sft/adapter",
        identity=ModelIdentity("/runs/sft/adapter", content_hash="sha256:abc"),
        record_id="model-1",
        base="Qwen/Qwen2.5-VL-7B-Instruct",
        adapter=True,
    )
    plugin = editscore(registry, prompt_file, backend="scripted-local", model={"step": "sft"})
    plugin.context.resolve_model = lambda ref: (
        trained if isinstance(ref, StepModel) else ResolvedModel(ref, ModelIdentity(ref))
    )
    assert plugin.backend.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert plugin.backend.options.lora == "/runs/sft/adapter"


def test_an_adapter_needs_its_base_model(registry, prompt_file):
    plugin = editscore(registry, prompt_file, backend="scripted-local", model="EditScore/X")
    with pytest.raises(EcapError, match="base_model is required"):
        plugin.backend  # noqa: B018


def test_a_server_backend_is_asked_for_the_adapter_by_its_served_name(registry, prompt_file):
    plugin = editscore(registry, prompt_file, model="editscore-7b")
    assert plugin.backend.model == "editscore-7b"


def test_the_fingerprint_follows_the_prompt_text(registry, prompt_file):
    before = editscore(registry, prompt_file).fingerprint()
    changed = dict(TEST_PROMPTS, perceptual_quality="Grade it. <instruction>")
    prompt_file.write_text(json.dumps(changed))
    assert editscore(registry, prompt_file).fingerprint() != before


# -- where the prompts come from ------------------------------------------------------------------


def test_prompts_are_read_from_the_installed_package_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "editscore"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "vie_prompts.py").write_text(
        textwrap.dedent(
            '''
            _context_no_delimit_reasoning_first = """You grade edits. Reply in JSON."""
            _prompts_0shot_two_image_edit_rule = """Two pictures: before and after."""
            _prompts_0shot_tie_rule_SC = """Scores from 0 to 10 and 0 to 10.
            Editing instruction: <instruction>"""
            _prompts_0shot_rule_PQ = """Naturalness from 0 to 10, artifacts from 0 to 10."""
            UNRELATED = 3
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    prompts = from_package(25)
    assert "editscore" not in sys.modules
    assert prompts.semantic_consistency == (
        "You grade edits. Reply in JSON.\nTwo pictures: before and after.\n"
        "Scores from 0 to 25 and 0 to 25.\nEditing instruction: <instruction>"
    )
    assert prompts.perceptual_quality == (
        "You grade edits. Reply in JSON.\nNaturalness from 0 to 25, artifacts from 0 to 25."
    )
    assert prompts.consistency_for("Make it red.").endswith("Editing instruction: Make it red.")


def test_a_package_without_the_prompts_says_to_use_a_prompt_file(tmp_path, monkeypatch):
    package = tmp_path / "site" / "editscore"
    package.mkdir(parents=True)
    (package / "vie_prompts.py").write_text("something = 'else'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(EcapError, match="use prompt_file"):
        from_package(25)


def test_the_installed_editscore_package_provides_both_prompts():
    if importlib.util.find_spec("editscore") is None:
        pytest.skip("the editscore package is not installed (pip install editscore --no-deps)")
    prompts = from_package(25)
    assert "<instruction>" in prompts.semantic_consistency
    assert "25" in prompts.semantic_consistency and "25" in prompts.perceptual_quality


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ('{"semantic_consistency": "no placeholder", "perceptual_quality": "q"}', "must contain"),
        ('{"semantic_consistency": "<instruction>"}', "perceptual_quality must be"),
        (
            '{"semantic_consistency": "<instruction>", "perceptual_quality": "q", "x": 1}',
            "unknown keys x",
        ),
    ],
)
def test_a_bad_prompt_file_is_an_error_naming_the_problem(registry, prompt_file, content, message):
    prompt_file.write_text(content)
    with pytest.raises(EcapError, match=message):
        editscore(registry, prompt_file).prompts  # noqa: B018


# -- a tiny Qwen2.5-VL with a LoRA adapter, end to end on CPU --------------------------------------


@pytest.fixture(scope="module")
def tiny_editscore_adapter(tiny_qwen25_vl: Path, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny Qwen2.5-VL's attention, randomly initialised (so it changes
    the model's answers), saved as PEFT saves EditScore's."""
    peft = pytest.importorskip("peft")
    import torch
    import transformers

    torch.manual_seed(0)
    base = transformers.AutoModelForImageTextToText.from_pretrained(tiny_qwen25_vl)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("editscore-lora")
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_tiny_qwen25_vl_with_a_lora_adapter_runs_the_filter_end_to_end(
    registry, tiny_qwen25_vl, tiny_editscore_adapter, prompt_file, tmp_path
):
    plugin = EditScoreFilter(
        EditScoreConfig.model_validate(
            {
                "model": str(tiny_editscore_adapter),
                "base_model": str(tiny_qwen25_vl),
                "backend": "transformers",
                "options": {"device_map": "cpu", "dtype": "float32"},
                "prompt_file": str(prompt_file),
                "samples": 2,
                "sampling": {"max_new_tokens": 8, "temperature": 0.7, "top_k": 20, "seed": 42},
            }
        ),
        context(tmp_path),
    )
    try:
        [result] = run(plugin, [make_item(tmp_path, "Make the square blue.")])
        identity = plugin.backend.identity()
        model = plugin.backend.load()[0]
    finally:
        plugin.close()
    # random weights do not answer in JSON: a recorded failure, never a score
    assert isinstance(result, SampleError)
    assert result.error_type in ("UnparsableAnswer", "Truncated")
    assert result.message.startswith("sample 0 (seed 42): semantic_consistency")
    assert "+lora:" in identity.name and identity.content_hash
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"  # merged, not wrapped


@pytest.mark.slow
def test_the_adapter_is_merged_into_the_weights(tiny_qwen25_vl, tiny_editscore_adapter, tmp_path):
    """The attention weights the adapter targets change, the others do not: it was applied."""
    import torch

    from ecap.vlm import make_backend

    weights = []
    for lora in (None, str(tiny_editscore_adapter)):
        backend = make_backend(
            "transformers",
            model=str(tiny_qwen25_vl),
            revision=None,
            options={"device_map": "cpu", "dtype": "float32", "lora": lora},
            context=context(tmp_path),
        )
        model = backend.load()[0]  # type: ignore[attr-defined]
        weights.append({k: v.clone() for k, v in model.state_dict().items() if "layers.0." in k})
        backend.close()
    base, adapted = weights
    changed = {k for k in base if not torch.equal(base[k], adapted[k])}
    assert changed
    assert changed == {
        k for k in base if "language_model" in k and k.endswith(("q_proj.weight", "v_proj.weight"))
    }


# -- re-deciding from stored scores ---------------------------------------------------------------


def test_retune_changes_decisions_from_stored_scores_without_a_model_call(
    registry, prompt_file, tmp_path, write_spec
):
    from click.testing import CliRunner

    from ecap.cli.filter import group as filter_cli
    from ecap.testing import make_pairs, run_spec

    csv = make_pairs(tmp_path, 6)  # pair i: category CATEGORIES[i], "Make pair {i} bluer."
    following = {f"Make pair {i} bluer.": value for i, value in enumerate([25, 20, 15, 10, 5, 0])}
    ScriptedBackend.script = staticmethod(
        lambda kind, text, seed: reply([following.get(text, 25), 25])
    )
    spec = write_spec(
        f"""
        name: retune
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}}}
          scored:
            filter: editscore
            from: pairs
            with: {{model: editscore-7b, backend: scripted, prompt_file: {prompt_file}}}
        """
    )
    result = run_spec(spec, registry=registry)
    assert result.status == "complete"
    calls = len(ScriptedBackend.requests)
    assert calls == 12  # two prompts per pair

    invoke = CliRunner().invoke(
        filter_cli,
        ["retune", "scored", "--min-score", "6.5", "--store", str(tmp_path / "ecap.db"), "--json"],
    )
    assert invoke.exit_code == 0, invoke.output
    report = json.loads(invoke.output)
    assert len(ScriptedBackend.requests) == calls  # zero model calls
    # prompt_following per pair: 10, 8, 6, 4, 2, 0
    assert report["current"]["rule"] == {"min_score": 5.0}
    assert (report["current"]["kept"], report["new"]["kept"]) == (3, 2)
    assert report["changed"] == 1
    assert report["new"]["by_category"]["move"] == {"kept": 0, "dropped": 1}  # pair 3
    assert report["new"]["by_category"]["remove"] == {"kept": 0, "dropped": 1}  # pair 2
    assert report["current"]["by_category"]["remove"] == {"kept": 1, "dropped": 0}
    assert report["new"]["dropped_by"] == {"{min_score: 6.5}": 4}

    options = ["--top-k", "1", "--whole-step", "--min-score", "1", "--component", "consistency"]
    combined = CliRunner().invoke(
        filter_cli, ["retune", "scored", *options, "--json", "--store", str(tmp_path / "ecap.db")]
    )
    assert combined.exit_code == 0, combined.output
    report = json.loads(combined.output)
    assert report["new"]["rule"] == {
        "all_of": [
            {"min_score": 1.0, "component": "consistency"},
            {"top_k": 1, "component": "consistency", "per_category": False},
        ]
    }
    # consistency is 10 for every pair: the tie goes to the pair id that sorts first
    assert report["new"]["kept"] == 1
    assert report["new"]["dropped_by"] == {
        "{min_score: 1, component: consistency}": 0,
        "{top_k: 1, component: consistency, per_category: false}": 5,
    }
    assert len(ScriptedBackend.requests) == calls

    rerun = run_spec(spec, registry=registry)  # unchanged spec: nothing is scored again
    assert rerun.status == "complete" and len(ScriptedBackend.requests) == calls


def test_retune_explains_what_it_cannot_do(registry, prompt_file, tmp_path, write_spec):
    from click.testing import CliRunner

    from ecap.cli.filter import group as filter_cli
    from ecap.testing import make_pairs, run_spec

    ScriptedBackend.script = staticmethod(lambda kind, text, seed: reply([20, 20]))
    csv = make_pairs(tmp_path, 2)
    spec = write_spec(
        f"""
        name: retune
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}}}
          scored:
            filter: editscore
            from: pairs
            with: {{model: m, backend: scripted, prompt_file: {prompt_file}}}
        """
    )
    run_spec(spec, registry=registry)
    store = ["--store", str(tmp_path / "ecap.db")]
    cases = [
        (["retune", "scored", *store], "say which rule to try"),
        (["retune", "nope", "--min-score", "1", *store], "no step 'nope'"),
        (["retune", "pairs", "--min-score", "1", *store], "is a source step, not a filter"),
        (
            ["retune", "scored", "--min-score", "1", "--component", "clarity", *store],
            "keep reads clarity, which this filter does not produce",
        ),
    ]
    for args, message in cases:
        outcome = CliRunner().invoke(filter_cli, args)
        assert outcome.exit_code != 0
        assert message in str(outcome.exception) + outcome.output, args


def test_an_openai_compatible_server_serving_the_adapter_is_asked_by_its_served_name(
    registry, prompt_file, tmp_path, fake_llm_server
):
    pytest.importorskip("openai")

    def answer(request) -> str:
        prompt = request.texts[-1]
        return reply([20, 10], "red hat") if "Instruction: " in prompt else reply([15, 25])

    fake_llm_server.responder = answer
    plugin = editscore(
        registry,
        prompt_file,
        model="editscore",
        backend="openai-compatible",
        samples=2,
        options={"base_url": fake_llm_server.openai_base_url, "api_key": "sk-fake"},
    )
    try:
        [score] = run(plugin, [make_item(tmp_path, "Make the hat red.")])
    finally:
        plugin.close()
    assert isinstance(score, Score)
    assert score.values == pytest.approx(
        {
            "prompt_following": 8.0,
            "consistency": 4.0,
            "perceptual_quality": 6.0,
            "overall": math.sqrt(4.0 * 6.0),
        }
    )
    calls = list(fake_llm_server.calls)
    assert {c.model for c in calls} == {"editscore"}
    assert sorted(c.body["seed"] for c in calls) == [42, 42, 43, 43]  # seed + i per sample
    assert all(len(c.images) == 2 for c in calls)
    assert {c.texts[0] for c in calls} == {"<img1>: "}
