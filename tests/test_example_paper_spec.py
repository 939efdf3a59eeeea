"""examples/paper/spec.yaml, the paper's whole recipe at scale, stays a spec ecap accepts.

It needs GPUs, API keys, a Label Studio server and the paper's data, none of which a test has; so
these tests give it what `validate` and `plan` look at (its environment variables and the input
files they read, all under tmp_path), and pin the recipe's shape so that it cannot drift from the
paper's order or stop asking the trained models the question they were trained on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from PIL import Image

from ecap.cli import cli

PAPER = Path(__file__).resolve().parent.parent / "examples" / "paper"
SPEC = PAPER / "spec.yaml"

#: The recipe, step by step, in the file's order: (step id, kind, plugin, upstream steps).
RECIPE = [
    # stage 1: SFT data and SFT (section 4.1)
    ("pairs", "source", "csv", []),
    ("glm_drafts", "caption", "glm", ["pairs"]),
    ("heuristics", "filter", "heuristics", ["glm_drafts"]),
    ("editscore", "filter", "editscore", ["heuristics"]),
    ("refine", "annotate", "label-studio", ["editscore"]),
    ("sft", "train", "sft", ["refine"]),
    # stage 2: preferences from the SFT model's mistakes, and DPO (section 4.2)
    ("preference_pairs", "source", "csv", []),
    ("sft_samples", "caption", "vlm", ["preference_pairs"]),
    ("prefer", "annotate", "label-studio", ["sft_samples"]),
    ("dpo", "train", "dpo", ["prefer"]),
    # evaluation: three benchmarks, three models, one judge (section 5)
    ("eval400", "source", "csv", []),
    ("bytemorph", "source", "bytemorph", []),
    ("hqedit", "source", "hq-edit", []),
    ("eval_base", "caption", "vlm", ["eval400", "bytemorph", "hqedit"]),
    ("eval_sft", "caption", "vlm", ["eval400", "bytemorph", "hqedit"]),
    ("eval_sft_dpo", "caption", "vlm", ["eval400", "bytemorph", "hqedit"]),
    ("judge_base", "judge", "gemini", ["eval_base"]),
    ("judge_sft", "judge", "gemini", ["eval_sft"]),
    ("judge_sft_dpo", "judge", "gemini", ["eval_sft_dpo"]),
    # the datasets and verdicts as files
    ("sft_dataset", "export", "jsonl", ["refine"]),
    ("preference_dataset", "export", "jsonl", ["prefer"]),
    ("verdicts", "export", "jsonl", ["judge_base", "judge_sft", "judge_sft_dpo"]),
]
KINDS = ("source", "caption", "filter", "annotate", "train", "judge", "export")

#: Variables the spec reads with no default: a user must set each one.
REQUIRED = {
    "ECAP_PAPER_PAIRS",
    "ECAP_PAPER_PREFERENCE_PAIRS",
    "ECAP_PAPER_EVAL400",
    "ECAP_PAPER_BYTEMORPH",
    "ECAP_PAPER_HQEDIT",
    "ECAP_PAPER_IMAGES",
    "EDITSCORE_ADAPTER",
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_API_KEY",
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
    "GEMINI_API_KEY",
}
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def spec_variables() -> dict[str, bool]:
    """Every variable the spec reads -> whether it has a default."""
    found: dict[str, bool] = {}
    for name, default in ENV_REFERENCE.findall(SPEC.read_text()):
        found[name] = found.get(name, False) or bool(default)
    return found


def recipe_steps() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(SPEC.read_text())["steps"]


def ecap(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_pairs_csv(path: Path, images: Path, *, reference: bool) -> None:
    """One pair in the csv source's columns, with the paper's ground truth when asked."""
    header, row = "source,target", f"{images / 'red.png'},{images / 'blue.png'}"
    if reference:
        header += ",primary,secondary,overall"
        row += ',"[""the square turns from red to blue""]",[],A red square becomes blue.'
    path.write_text(f"{header}\n{row}\n")


def write_benchmark_jsonl(path: Path, images: Path, columns: dict[str, str]) -> None:
    """One row in a benchmark's published column names, with structured ground truth added."""
    row = {
        columns["source"]: str(images / "red.png"),
        columns["target"]: str(images / "blue.png"),
        columns["instruction"]: "make the square blue",
        "primary": ["the square turns from red to blue"],
        "secondary": [],
        "overall": "A red square becomes blue.",
    }
    path.write_text(json.dumps(row) + "\n")


@pytest.fixture
def paper_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy values for every variable the spec needs, and its input files in tmp_path."""
    document_root = tmp_path / "label-studio"
    images = document_root / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(images / "red.png")
    Image.new("RGB", (16, 16), "blue").save(images / "blue.png")
    data = tmp_path / "data"
    data.mkdir()
    write_pairs_csv(data / "pairs.csv", images, reference=False)
    write_pairs_csv(data / "preference-pairs.csv", images, reference=False)
    write_pairs_csv(data / "eval400.csv", images, reference=True)
    write_benchmark_jsonl(
        data / "bytemorph.jsonl",
        images,
        {"source": "src_img", "target": "tgt_img", "instruction": "edit_prompt"},
    )
    write_benchmark_jsonl(
        data / "hq-edit.jsonl",
        images,
        {"source": "input_image", "target": "output_image", "instruction": "edit"},
    )
    adapter = tmp_path / "EditScore-7B"
    adapter.mkdir()

    env = {
        "ECAP_STORE": f"sqlite:///{tmp_path / 'fresh.db'}",
        "ECAP_PAPER_OUT": str(tmp_path / "out"),
        "ECAP_PAPER_PAIRS": str(data / "pairs.csv"),
        "ECAP_PAPER_PREFERENCE_PAIRS": str(data / "preference-pairs.csv"),
        "ECAP_PAPER_EVAL400": str(data / "eval400.csv"),
        "ECAP_PAPER_BYTEMORPH": str(data / "bytemorph.jsonl"),
        "ECAP_PAPER_HQEDIT": str(data / "hq-edit.jsonl"),
        "ECAP_PAPER_IMAGES": str(images),
        "EDITSCORE_ADAPTER": str(adapter),
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": "dummy-label-studio-token",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "GEMINI_API_KEY": "dummy-gemini-key",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_the_fixture_sets_exactly_the_variables_the_spec_requires(
    paper_env: dict[str, str],
) -> None:
    required = {name for name, has_default in spec_variables().items() if not has_default}
    assert required == REQUIRED
    assert set(paper_env) >= REQUIRED


def test_validate_accepts_the_spec_once_its_environment_is_set(paper_env: dict[str, str]) -> None:
    result = ecap("pipeline", "validate", str(SPEC))
    assert result.exit_code == 0, result.output
    assert f"ok ({len(RECIPE)} steps" in result.output


def test_validate_names_every_unset_variable_and_opens_no_store(
    paper_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in REQUIRED:
        monkeypatch.delenv(name)
    result = ecap("pipeline", "validate", str(SPEC))
    assert result.exit_code == 1
    for name in REQUIRED:
        assert f"environment variable {name} is not set" in result.output
    assert not Path(paper_env["ECAP_STORE"].removeprefix("sqlite:///")).exists()


def test_validate_checks_that_the_data_files_exist(
    paper_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ECAP_PAPER_PAIRS", str(tmp_path / "missing.csv"))
    result = ecap("pipeline", "validate", str(SPEC))
    assert result.exit_code == 1
    assert "steps.pairs.with" in result.output and "missing.csv" in result.output


def test_plan_on_a_fresh_store_lists_every_step_and_counts_the_imports(
    paper_env: dict[str, str],
) -> None:
    before = sorted(p.relative_to(PAPER) for p in PAPER.rglob("*"))
    result = ecap("pipeline", "plan", str(SPEC), "--json")
    assert result.exit_code == 0, result.output
    plan = {row["step"]: row for row in json.loads(result.output)}

    assert set(plan) == {step for step, *_ in RECIPE}
    steps = recipe_steps()
    for step, kind, plugin, upstream in RECIPE:
        assert (plan[step]["kind"], plan[step]["plugin"]) == (kind, plugin)
        # A model named as {step: NAME} makes NAME a dependency too.
        models = {
            v["step"]
            for v in steps[step].get("with", {}).values()
            if isinstance(v, dict) and "step" in v
        }
        assert set(filter(None, plan[step]["from"].split(","))) == set(upstream) | models
        if kind == "source":  # one row in each file, nothing cached in a fresh store
            assert (plan[step]["inputs"], plan[step]["cached"], plan[step]["to_run"]) == (1, 0, 1)
        else:  # nothing upstream has run, so nothing below a source can be counted yet
            assert plan[step]["to_run"] == "?"
    assert Path(paper_env["ECAP_STORE"].removeprefix("sqlite:///")).exists()
    assert sorted(p.relative_to(PAPER) for p in PAPER.rglob("*")) == before


def test_the_spec_names_the_steps_in_the_order_of_the_recipe() -> None:
    steps = recipe_steps()
    written = []
    for step_id, step in steps.items():
        (kind,) = [key for key in KINDS if key in step]
        upstream = step.get("from", [])
        written.append(
            (step_id, kind, step[kind], [upstream] if isinstance(upstream, str) else upstream)
        )
    assert written == RECIPE


def test_each_model_step_uses_the_model_the_recipe_says() -> None:
    steps = recipe_steps()
    assert (
        steps["sft"]["with"]["base_model"] == "${env:ECAP_BASE_MODEL:-Qwen/Qwen3-VL-32B-Instruct}"
    )
    assert steps["sft_samples"]["with"]["model"] == {"step": "sft"}
    assert steps["dpo"]["with"]["model"] == {"step": "sft"}
    assert steps["dpo"]["with"]["ref_model"] == {"step": "sft"}
    assert steps["eval_base"]["with"]["model"] == steps["sft"]["with"]["base_model"]
    assert steps["eval_sft"]["with"]["model"] == {"step": "sft"}
    assert steps["eval_sft_dpo"]["with"]["model"] == {"step": "dpo"}
    for trainer in ("sft", "dpo"):
        settings = steps[trainer]["with"]
        assert (settings["deepspeed"], settings["bf16"]) == ("zero3", True)
        assert settings["launcher"]["nproc_per_node"] == 8
    assert steps["editscore"]["with"]["backend"] == "vllm"
    assert {steps[s]["with"]["task"] for s in ("refine", "prefer")} == {"refine", "prefer"}
    judges = [steps[s]["with"] for s in ("judge_base", "judge_sft", "judge_sft_dpo")]
    assert judges[0]["model"] == "gemini-2.5-pro"
    assert judges[1:] == judges[:-1], "the three models must be judged alike"


def test_trained_models_are_asked_what_they_were_trained_on() -> None:
    """Training and sampling share the prompt and the image size; all three evaluated models are
    asked alike, as the paper does for every model it compares."""
    steps = recipe_steps()
    trained_on = {
        (steps[t]["with"]["prompt"], steps[t]["with"]["max_pixels"]) for t in ("sft", "dpo")
    }
    samplers = ("sft_samples", "eval_base", "eval_sft", "eval_sft_dpo")
    asked = {(steps[s]["with"]["prompt"], steps[s]["with"]["max_image_pixels"]) for s in samplers}
    assert len(trained_on) == 1 and asked == trained_on
    decoding = {
        json.dumps([steps[s]["with"][k] for k in ("backend", "options", "sampling")])
        for s in samplers
    }
    assert len(decoding) == 1


def test_the_readme_documents_every_variable_the_spec_reads() -> None:
    readme = (PAPER / "README.md").read_text()
    undocumented = [name for name in spec_variables() if name not in readme]
    assert undocumented == []
