"""``executor: ray``: model steps run on a pool of plugin replicas (Ray actors) in a local Ray
cluster with 2 CPUs, and leave exactly what the in-process executor leaves in the store; network
steps (an LLM judge against the fake server) stay in the driver.

Ray is the ``ray`` extra, not a dev dependency (about 600 MB and a cluster start per session), so
these tests are skipped, saying so, where it is not installed: ``pip install 'editcaption[ray]'``.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ecap.hookspecs import Register, hookimpl
from ecap.plugins import build_registry
from ecap.records import Instruction, Item, SampleError
from ecap.store import Store
from ecap.testing import FakeCaptioner, make_pairs, run_spec
from ecap.testing.fakes import FakeCaptionerConfig, FakePlugins

ray = pytest.importorskip("ray", reason="executor: ray needs Ray: pip install 'editcaption[ray]'")

PAIRS = 12


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the module (starting one takes seconds), with 2 CPUs. The
    captioners defined below travel to the replicas by value: a Ray worker cannot import a test
    module."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def write_spec(
    folder: Path, name: str, steps: dict[str, Any], executor: dict[str, Any] | None
) -> Path:
    spec: dict[str, Any] = {"name": name, "store": f"sqlite:///{folder / f'{name}.db'}"}
    if executor is not None:
        spec["executor"] = executor
    spec["steps"] = steps
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path


def store_contents(spec: Path, name: str) -> dict[str, Any]:
    """What a run leaves that must not depend on where it ran: each pair's instruction texts,
    and how many verdicts were stored and for which instructions' texts."""
    store = Store(f"sqlite:///{spec.parent / f'{name}.db'}", read_only=True)
    from sqlalchemy import select

    from ecap.store.schema import InstructionRow, VerdictRow

    with store.engine.connect() as conn:
        instructions = list(conn.execute(select(InstructionRow)))
        verdicts = list(conn.execute(select(VerdictRow)))
    texts: dict[str, list[str]] = defaultdict(list)
    by_id = {}
    for row in instructions:
        texts[row.pair_id].append(row.text)  # pairs are content-addressed
        by_id[row.id] = row.text
    return {
        "instructions": {pair: sorted(t) for pair, t in texts.items()},
        "verdicts": sorted(by_id[row.instruction_id] for row in verdicts),
    }


def captions_and_judge(csv_file: Path, server_url: str, history: Path) -> dict[str, Any]:
    return {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "fake",
            "from": "pairs",
            "batch_size": 2,
            "with": {
                "template": "Make the {category} edit to {pair_id}.",
                "candidates": 2,
                "history_file": str(history),
            },
        },
        "judged": {
            "judge": "openai",
            "from": "captions",
            "batch_size": 4,
            "concurrency": 2,
            "with": {
                "model": "gpt-4.1",
                "api_key": "${env:FAKE_LLM_KEY}",
                "base_url": server_url,
                "backoff": 0.01,
            },
        },
    }


def test_captioning_on_two_replicas_and_judging_in_the_driver_store_what_a_local_run_does(
    ray_cluster, ecap_registry, fake_llm_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    csv_file = make_pairs(tmp_path, PAIRS)
    url = fake_llm_server.openai_base_url
    local = write_spec(
        tmp_path, "local", captions_and_judge(csv_file, url, tmp_path / "local.jsonl"), None
    )
    on_ray = write_spec(
        tmp_path,
        "on_ray",
        captions_and_judge(csv_file, url, tmp_path / "ray.jsonl"),
        {"type": "ray", "replicas": 2, "num_cpus_per_replica": 1},
    )

    assert run_spec(local).status == "complete"
    local_calls = len(FakeCaptioner.calls)
    result = run_spec(on_ray)

    assert result.status == "complete"
    assert {s: o.counts["done"] for s, o in result.steps.items()} == {
        "pairs": PAIRS,
        "captions": PAIRS,
        "judged": 2 * PAIRS,
    }
    assert len(FakeCaptioner.calls) == local_calls, "the captioner ran in the replicas"
    captioned = [
        json.loads(line)["pair"] for line in (tmp_path / "ray.jsonl").read_text().splitlines()
    ]
    assert len(captioned) == len(set(captioned)) == PAIRS, "each pair captioned once"
    assert store_contents(on_ray, "on_ray") == store_contents(local, "local")
    assert store_contents(local, "local")["verdicts"], "the judge stored verdicts"


def test_a_ray_run_resumes_from_the_stores_completion_not_from_ray(
    ray_cluster, ecap_registry, tmp_path
):
    csv_file = make_pairs(tmp_path, PAIRS)
    history = tmp_path / "calls.jsonl"
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "fake",
            "from": "pairs",
            "batch_size": 3,
            "with": {"history_file": str(history)},
        },
    }
    spec = write_spec(tmp_path, "resumed", steps, {"type": "ray", "replicas": 2})
    assert run_spec(spec, limit=5).status == "complete"  # as if the job had died after 5 pairs

    result = run_spec(spec)

    assert result.steps["captions"].counts == {
        "inputs": PAIRS,
        "cached": 5,
        "done": PAIRS - 5,
        "failed": 0,
        "pending": 0,
    }
    captioned = [json.loads(line)["pair"] for line in history.read_text().splitlines()]
    assert len(captioned) == len(set(captioned)) == PAIRS, "no pair was captioned twice"


def test_a_plugin_error_on_a_replica_is_a_failed_sample_and_a_raise_is_retried(
    ray_cluster, ecap_registry, tmp_path
):
    csv_file = make_pairs(tmp_path, 6)
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "fake",
            "from": "pairs",
            "batch_size": 6,
            "retries": 1,
            "with": {"fail": ["color"], "raise_first": 1},
        },
    }
    spec = write_spec(tmp_path, "errors", steps, {"type": "ray", "replicas": 1})

    result = run_spec(spec)

    assert result.steps["captions"].counts["done"] == 5  # the raise was retried on the replica
    assert result.steps["captions"].counts["failed"] == 1  # the scripted SampleError


def test_the_tiny_vlm_captions_the_same_on_a_replica_as_in_process(
    ray_cluster, ecap_registry, tiny_qwen3_vl, tmp_path
):
    csv_file = make_pairs(tmp_path, 4)
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "vlm",
            "from": "pairs",
            "batch_size": 2,
            "with": {
                "model": str(tiny_qwen3_vl),
                "sampling": {"max_new_tokens": 6},
                "keep_truncated": True,
            },
        },
    }
    local = write_spec(tmp_path, "vlm_local", steps, None)
    on_ray = write_spec(tmp_path, "vlm_ray", steps, {"type": "ray", "replicas": 1})

    assert run_spec(local).status == "complete"
    assert run_spec(on_ray).status == "complete"

    assert store_contents(on_ray, "vlm_ray") == store_contents(local, "vlm_local")


def test_a_replica_runs_the_model_its_train_step_made_as_resolved_by_the_driver(
    ray_cluster, ecap_registry, tmp_path
):
    csv_file = make_pairs(tmp_path, 6)
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "sft": {"train": "fake", "from": "pairs"},
        "sampled": {"caption": "fake", "from": "pairs", "with": {"model": {"step": "sft"}}},
    }
    spec = write_spec(tmp_path, "trained", steps, {"type": "ray", "replicas": 1})

    result = run_spec(spec)

    assert result.status == "complete" and FakeCaptioner.calls == [], "sampled on the replica"
    from sqlalchemy import select

    from ecap.store.schema import InstructionRow

    store = Store(f"sqlite:///{tmp_path / 'trained.db'}", read_only=True)
    with store.engine.connect() as conn:
        rows = conn.execute(select(InstructionRow).where(InstructionRow.origin == "model"))
        authors = {row.author for row in rows}
    trained = tmp_path / ".ecap" / "work" / "sft"
    (author,) = authors
    assert author.startswith(f"fake:{trained}") and author.endswith("/model")


class DiesOnceConfig(FakeCaptionerConfig):
    marker: str


class DiesOnce(FakeCaptioner):
    """The fake captioner, except that the first batch any replica is given kills its process
    (as an out-of-memory kill or a segfault in a model would)."""

    Config = DiesOnceConfig
    config: DiesOnceConfig

    def caption(self, batch: Sequence[Item]) -> list[list[Instruction] | SampleError]:
        marker = Path(self.config.marker)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().caption(batch)


class CannotStartConfig(FakeCaptionerConfig):
    driver_pid: int


class CannotStart(FakeCaptioner):
    """Builds in the driver, raises when built anywhere else (a replica without what it needs)."""

    Config = CannotStartConfig

    def __init__(self, config: CannotStartConfig, context: Any) -> None:
        if os.getpid() != config.driver_pid:
            raise RuntimeError("no accelerator for this replica")
        super().__init__(config, context)


class ReplicaPlugins:
    @hookimpl
    def register_captioners(self, register: Register) -> None:
        register("dies-once", DiesOnce)
        register("cannot-start", CannotStart)


def with_replica_plugins() -> Any:
    return build_registry(extra_plugins=[("fakes", FakePlugins()), ("replicas", ReplicaPlugins())])


def test_a_replica_that_dies_mid_batch_is_restarted_and_its_batch_retried(
    ray_cluster, ecap_registry, tmp_path
):
    csv_file = make_pairs(tmp_path, 6)
    history = tmp_path / "calls.jsonl"
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "dies-once",
            "from": "pairs",
            "batch_size": 3,
            "retries": 2,
            "with": {"marker": str(tmp_path / "died"), "history_file": str(history)},
        },
    }
    spec = write_spec(tmp_path, "dies", steps, {"type": "ray", "replicas": 1})

    result = run_spec(spec, registry=with_replica_plugins())

    assert (tmp_path / "died").exists(), "a replica died"
    assert result.steps["captions"].counts["done"] == 6
    assert result.steps["captions"].counts["failed"] == 0
    captioned = [json.loads(line)["pair"] for line in history.read_text().splitlines()]
    assert len(captioned) == len(set(captioned)) == 6


def test_a_plugin_that_cannot_be_built_on_a_replica_fails_its_step_at_once(
    ray_cluster, ecap_registry, tmp_path
):
    csv_file = make_pairs(tmp_path, 6)
    steps = {
        "pairs": {"source": "csv", "with": {"path": str(csv_file)}},
        "captions": {
            "caption": "cannot-start",
            "from": "pairs",
            "with": {"driver_pid": os.getpid()},
        },
    }
    spec = write_spec(tmp_path, "unbuilt", steps, {"type": "ray", "replicas": 1})

    result = run_spec(spec, registry=with_replica_plugins())

    captions = result.steps["captions"]
    assert captions.status == "failed"
    assert "could not start" in (captions.error or "")
    assert "no accelerator for this replica" in (captions.error or "")
