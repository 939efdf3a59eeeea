"""``python -m ecap_trl.worker JOB_JSON``: one rank of a launched training.

Every rank trains; rank 0 alone appends metrics (one JSON object per logging step) to the job's
metrics file, prints them as a line, and writes ``result.json`` for the step that launched it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .engine import run
from .job import Job
from .launch import die_with_parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecap_trl.worker", description=__doc__)
    parser.add_argument("job", type=Path, help="the job.json the step wrote")
    # The DeepSpeed launcher passes --local_rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    die_with_parent()
    job = Job.load(args.job)
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def append(step: int, values: dict[str, float]) -> None:
        assert job.metrics_file is not None
        with open(job.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "values": values}) + "\n")
        # After the line is written: the parent reads the file when it sees this.
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"step {step}: {shown}", flush=True)

    result = run(job, append if main_rank and job.metrics_file else None)
    if main_rank:
        scratch = job.result_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(result, indent=2))
        os.replace(scratch, job.result_file)


if __name__ == "__main__":
    main()
