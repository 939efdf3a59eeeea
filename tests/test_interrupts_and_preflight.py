"""Stopping a run from outside, and the problems a spec can show before any work starts."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecap.errors import SpecError
from ecap.spec import load_spec, preflight
from ecap.testing import make_pairs

RUN_WITH_FAKES = """
import sys
from ecap.cli import main
from ecap.plugins import set_registry
from ecap.testing import registry_with_fakes
set_registry(registry_with_fakes())
main(sys.argv[1:])
"""


def _history_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_marks_the_run_and_its_step_interrupted(write_spec, tmp_path, signum, exit_code):
    csv = make_pairs(tmp_path, 12)
    history = tmp_path / "calls.jsonl"
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {csv}}}}}
          captions:
            caption: fake
            from: pairs
            batch_size: 2
            with: {{delay: 0.3, history_file: {history}}}
    """)
    script = tmp_path / "run.py"
    script.write_text(RUN_WITH_FAKES)
    process = subprocess.Popen(
        [sys.executable, str(script), "pipeline", "run", str(spec), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while _history_lines(history) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr and "Interrupted" in stderr
    with sqlite3.connect(tmp_path / "ecap.db") as db:
        [(run_status, run_error)] = db.execute("SELECT status, error FROM runs").fetchall()
        steps = dict(db.execute("SELECT step_id, status FROM step_runs").fetchall())
    assert run_status == "interrupted" and signal.Signals(signum).name in run_error
    assert steps == {"pairs": "complete", "captions": "interrupted"}


def test_validate_reports_a_missing_input_file_before_any_run(write_spec, ecap_registry, tmp_path):
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {tmp_path / "nowhere.csv"}}}}}
          captions: {{caption: fake, from: pairs}}
    """)
    with pytest.raises(SpecError) as error:
        preflight(load_spec(spec))
    message = str(error.value)
    assert "steps.pairs.with" in message and "nowhere.csv" in message and "spec.yaml:2" in message
    assert not (tmp_path / "ecap.db").exists()


def test_a_typo_in_a_nested_block_suggests_that_blocks_fields(write_spec, ecap_registry, tmp_path):
    spec = write_spec(f"""
        steps:
          pairs: {{source: csv, with: {{path: {make_pairs(tmp_path)}}}}}
          captions:
            caption: vlm
            from: pairs
            with: {{model: some/model, sampling: {{temprature: 0.7}}}}
    """)
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    message = str(error.value)
    assert "steps.captions.with.sampling.temprature" in message
    assert "did you mean 'temperature'?" in message
