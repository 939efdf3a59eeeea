"""The ``executor:`` block of a spec and ``--executor``/``--address`` on the command line: how
they are read, what they never change (cache keys), which steps go to replicas, and what a run
says when Ray is not installed. None of these tests needs Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecap.cli import cli
from ecap.cli.pipeline import _executor
from ecap.errors import SpecError
from ecap.executors import ExecutorConfig, computes_locally
from ecap.interfaces import PluginContext
from ecap.spec import load_spec
from ecap.testing import FakeCaptioner, FakeJudge, make_pairs, registry_with_fakes, run_spec


def spec_with(folder: Path, executor: str, name: str = "spec.yaml") -> Path:
    csv_file = make_pairs(folder, 4)
    path = folder / name
    path.write_text(
        "name: scale\n"
        f"{executor}"
        "steps:\n"
        f"  pairs: {{source: csv, with: {{path: {csv_file}}}}}\n"
        "  captions: {caption: fake, from: pairs}\n"
    )
    return path


def test_executor_ray_is_short_for_a_ray_executor_with_its_defaults(tmp_path):
    spec = load_spec(spec_with(tmp_path, "executor: ray\n"), registry_with_fakes())
    assert spec.executor == ExecutorConfig(type="ray")
    assert (spec.executor.replicas, spec.executor.num_gpus_per_replica) == (1, 0)


def test_a_ray_executor_names_its_cluster_replicas_and_resources(tmp_path):
    block = (
        "executor:\n  type: ray\n  address: auto\n  replicas: 8\n"
        "  num_gpus_per_replica: 1\n  num_cpus_per_replica: 4\n"
    )
    spec = load_spec(spec_with(tmp_path, block), registry_with_fakes())
    assert spec.executor == ExecutorConfig(
        type="ray", address="auto", replicas=8, num_gpus_per_replica=1, num_cpus_per_replica=4
    )


def test_a_spec_without_executor_runs_in_process(tmp_path):
    assert load_spec(spec_with(tmp_path, ""), registry_with_fakes()).executor is None


def test_a_misspelt_executor_field_is_reported_at_its_line(tmp_path):
    with pytest.raises(SpecError) as raised:
        load_spec(spec_with(tmp_path, "executor: {type: ray, replica: 2}\n"), registry_with_fakes())
    assert "line 2" in str(raised.value) or ":2:" in str(raised.value)
    assert "executor.replica" in str(raised.value) and "replicas" in str(raised.value)


def test_an_unknown_executor_type_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"executor\.type"):
        load_spec(spec_with(tmp_path, "executor: slurm\n"), registry_with_fakes())


def test_the_command_line_overrides_the_spec_and_an_address_means_ray(tmp_path):
    spec = load_spec(
        spec_with(tmp_path, "executor: {type: ray, replicas: 4}\n"), registry_with_fakes()
    )
    assert _executor(spec, None, None) == spec.executor
    assert _executor(spec, "local", None) == ExecutorConfig(type="local", replicas=4)
    plain = load_spec(spec_with(tmp_path, ""), registry_with_fakes())
    assert _executor(plain, None, "ray://head:10001") == ExecutorConfig(
        type="ray", address="ray://head:10001"
    )


def test_where_a_step_computes_never_enters_a_cache_key(tmp_path, ecap_registry):
    """Moving a spec to a cluster recomputes nothing: the plan's step keys are the same."""
    keys = {}
    for name, block in (("local", ""), ("ray", "executor: {type: ray, replicas: 2}\n")):
        spec = spec_with(tmp_path, block, f"{name}.yaml")
        result = CliRunner().invoke(cli, ["pipeline", "plan", str(spec), "--json"])
        assert result.exit_code == 0, result.output
        keys[name] = {row["step"]: row["step_key"] for row in json.loads(result.output)}
    assert keys["local"] == keys["ray"]


def test_model_steps_go_to_replicas_and_network_steps_stay_in_the_driver(tmp_path):
    context = PluginContext(step_id="s", base_dir=tmp_path, work_dir=tmp_path)
    assert computes_locally(FakeCaptioner(FakeCaptioner.Config(), context))  # a sync method
    assert not computes_locally(FakeJudge(FakeJudge.Config(), context))  # a coroutine: calls


def test_without_ray_a_ray_run_fails_the_model_step_at_once_naming_the_extra(
    tmp_path, ecap_registry, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = run_spec(spec_with(tmp_path, "executor: ray\n"))
    assert result.steps["pairs"].status == "complete"  # a source reads files: no replica needed
    captions = result.steps["captions"]
    assert captions.status == "failed"
    assert "pip install 'editcaption[ray]'" in (captions.error or "")
    assert FakeCaptioner.calls == []
