"""Specs are validated completely, before any work, with every error at file:line: field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecap.errors import SpecError
from ecap.spec import load_spec
from ecap.testing import FakeCaptioner


def problems(path: Path, registry: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, registry)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_a_valid_spec_orders_steps_by_dependency(write_spec, ecap_registry, ecap_pairs):
    spec = load_spec(
        write_spec(f"""
        name: demo
        steps:
          judged: {{judge: fake, from: captions}}
          captions: {{caption: fake, from: pairs, with: {{candidates: 2}}}}
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
    """),
        ecap_registry,
    )
    assert spec.order() == ["pairs", "captions", "judged"]
    assert spec.steps["captions"].config.candidates == 2  # type: ignore[attr-defined]
    assert spec.downstream("pairs") == {"captions", "judged"}


def test_unknown_plugin_is_reported_with_its_line_and_a_suggestion(write_spec, ecap_registry):
    path = write_spec("""
        name: demo
        steps:
          pairs: {source: csv, with: {path: x.csv}}
          captions:
            caption: fak
            from: pairs
    """)
    assert problems(path, ecap_registry) == [
        f"{path}:5: steps.captions.caption: unknown caption plugin 'fak' — did you mean 'fake'?"
    ]


def test_every_problem_is_reported_at_once_with_file_and_line(write_spec, ecap_registry):
    path = write_spec("""
        name: demo
        steps:
          pairs:
            source: csv
            with:
              path: x.csv
              formt: csv
          captions:
            captoin: fake
            from: pairz
          judged:
            judge: fake
            from: pairs
            batch_size: 0
    """)
    found = problems(path, ecap_registry)
    assert (
        f"{path}:7: steps.pairs.with.formt: unknown field — did you mean 'format'?; "
        "`ecap plugins show csv` lists the fields" in found
    )
    assert f"{path}:9: steps.captions.captoin: unknown step key — did you mean 'caption'?" in found
    assert any(p.startswith(f"{path}:14: steps.judged.batch_size:") for p in found)


def test_unknown_upstream_step_gets_a_suggestion(write_spec, ecap_registry):
    path = write_spec("""
        steps:
          pairs: {source: csv, with: {path: x.csv}}
          captions: {caption: fake, from: pair}
    """)
    assert problems(path, ecap_registry) == [
        f"{path}:3: steps.captions.from: unknown step 'pair' — did you mean 'pairs'?"
    ]


def test_cycles_are_rejected(write_spec, ecap_registry):
    path = write_spec("""
        steps:
          a: {caption: fake, from: b}
          b: {judge: fake, from: a}
    """)
    (problem,) = problems(path, ecap_registry)
    assert "steps form a cycle" in problem


def test_env_interpolation_with_defaults_and_missing_variables(
    write_spec, ecap_registry, monkeypatch
):
    monkeypatch.setenv("PAIRS_FILE", "from-env.csv")
    monkeypatch.delenv("NOT_SET", raising=False)
    spec = load_spec(
        write_spec("""
        store: ${env:NOT_SET:-sqlite:///fallback.db}
        steps:
          pairs: {source: csv, with: {path: "${env:PAIRS_FILE}"}}
    """),
        ecap_registry,
    )
    assert spec.store == "sqlite:///fallback.db"
    assert spec.steps["pairs"].config.path == "from-env.csv"  # type: ignore[attr-defined]
    assert ("steps", "pairs", "with", "path") in spec.secret_paths

    path = write_spec(
        """
        steps:
          pairs: {source: csv, with: {path: "${env:NOT_SET}"}}
    """,
        "missing.yaml",
    )
    assert problems(path, ecap_registry) == [
        f"{path}:2: steps.pairs.with.path: environment variable NOT_SET is not set "
        "(set it, or give a default: ${env:NOT_SET:-value})"
    ]


def test_invalid_yaml_points_at_the_line(write_spec, ecap_registry):
    path = write_spec("steps:\n  pairs: {source: csv\n  other: [\n")
    (problem,) = problems(path, ecap_registry)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_a_bad_spec_fails_before_any_work(write_spec, ecap_registry, ecap_pairs, tmp_path):
    from ecap.cli import main

    path = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {ecap_pairs}}}}}
          captions: {{caption: fake, from: pairs, with: {{candidate: 3}}}}
    """)
    with pytest.raises(SystemExit) as exit_info:
        main(["pipeline", "run", str(path), "--no-progress"])
    assert exit_info.value.code == 1
    assert FakeCaptioner.calls == []
    assert not (tmp_path / "ecap.db").exists()  # not even the store was created
