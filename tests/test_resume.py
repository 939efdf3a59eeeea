"""A run killed with SIGKILL half-way, then re-run, ends with every sample exactly once, and
recomputes nothing that had been committed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from ecap.store import Store
from ecap.store.schema import InstructionRow, PairRow, SampleResult, StepRun
from ecap.testing import kill_run_when, make_pairs

RUN_WITH_FAKES = """
import sys
from ecap.cli import main
from ecap.plugins import set_registry
from ecap.testing import registry_with_fakes
set_registry(registry_with_fakes())
main(sys.argv[1:])
"""


def test_a_killed_run_resumes_without_repeating_or_losing_work(write_spec, tmp_path):
    csv = make_pairs(tmp_path, 20)
    history = tmp_path / "calls.jsonl"
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}, batch_size: 4}}
          captions:
            caption: fake
            from: pairs
            batch_size: 2
            with: {{delay: 0.15, history_file: {history}}}
          out: {{export: jsonl, from: captions, with: {{path: out.jsonl}}}}
    """)
    script = tmp_path / "run.py"
    script.write_text(RUN_WITH_FAKES)
    command = [sys.executable, str(script), "pipeline", "run", str(spec), "--no-progress"]

    kill_run_when(command, lambda: _lines(history) >= 10)  # five batches reached the model
    assert 10 <= _lines(history) < 20, "the kill must land half-way"

    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    captions_key = _step_key(store, "captions")
    committed = _committed_pairs(store, captions_key)
    assert 0 < len(committed) < 20
    calls_before = _lines(history)

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr

    recalled = [
        json.loads(line)["pair"] for line in history.read_text().splitlines()[calls_before:]
    ]
    assert not set(recalled) & committed, "a committed sample was computed again"
    assert len(recalled) == len(set(recalled)) == 20 - len(committed)

    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PairRow)).scalar_one() == 20
        # One instruction per pair from the CSV, and exactly one from the captioner.
        per_origin = dict(
            conn.execute(
                select(InstructionRow.origin, func.count()).group_by(InstructionRow.origin)
            ).all()
        )
        assert per_origin == {"reference": 20, "model": 20}
    assert len(_committed_pairs(store, captions_key)) == 20
    exported = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len({json.loads(row)["pair_id"] for row in exported}) == len(exported) == 20


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _step_key(store: Store, step_id: str) -> str:
    with store.engine.connect() as conn:
        return (
            conn.execute(select(StepRun.step_key).where(StepRun.step_id == step_id))
            .scalars()
            .first()
        )  # type: ignore[return-value]


def _committed_pairs(store: Store, step_key: str) -> set[str]:
    with store.engine.connect() as conn:
        outputs = (
            conn.execute(select(SampleResult.outputs).where(SampleResult.step_key == step_key))
            .scalars()
            .all()
        )
    return {ref["pair"] for refs in outputs for ref in refs}
