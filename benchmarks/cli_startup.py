"""CLI start-up benchmark: how long a user waits for ``ecap`` to answer, against ``import click``.

Run from the repository root (no GPU, no network)::

    python benchmarks/cli_startup.py             # 15 alternating rounds
    python benchmarks/cli_startup.py --runs 5    # smoke run

Every command runs as a fresh subprocess, as a user types it, through the ``ecap`` console
script installed beside this interpreter. The baseline is ``python -c "import click"`` with the
same interpreter: the least a click program can cost. The commands run in alternating rounds
(baseline, then each ecap command, then the baseline again...) so that a change in the machine's
load touches both sides; the median wall time of each is printed, and each ecap command as a ratio
to the baseline's median. Goals (issue 17): at most 3x for ``--help``, at most 5x for ``plugins
list`` and ``runs list``. ``runs list`` reads a small store (three finished runs) made in a
temporary folder before timing. For information, the least any command reading the store can
cost with the libraries ecap reads it with is timed beside it: ``python -c`` importing click,
SQLAlchemy and rich, reading the runs table with one query and printing it as a rich table, with
no ecap code at all.

Every command runs with bytecode caches (``PYTHONDONTWRITEBYTECODE`` removed from its
environment), as an installed package runs.

The script prints; it never fails on a timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _e2e import user_environment

GOALS = {"--help": 3.0, "plugins list": 5.0, "runs list": 5.0}
FLOOR = "libraries alone"
#: What ``ecap runs list`` does with no ecap code: import click, SQLAlchemy and rich, read the
#: runs table in one query and print it as a table.
LIBRARIES_ALONE = """
import click, rich.console, rich.table, sqlalchemy
engine = sqlalchemy.create_engine("sqlite:///{store}")
with engine.connect() as conn:
    rows = conn.exec_driver_sql("SELECT id, name, status, started_at FROM runs").all()
table = rich.table.Table("id", "name", "status", "started_at")
for row in rows:
    table.add_row(*map(str, row))
rich.console.Console().print(table)
"""


def small_store(folder: Path) -> Path:
    """A store holding three finished runs, written through the store's own API."""
    import ecap
    from ecap.hashing import digest
    from ecap.store import Store

    path = folder / "ecap.db"
    store = Store(f"sqlite:///{path}")
    for n in range(3):
        run_id = store.start_run(
            name=f"startup-benchmark-{n}",
            spec_path="pipeline.yaml",
            spec_text="",
            spec_hash=digest("startup", n),
            ecap_version=ecap.__version__,
            plugins={},
        )
        store.finish_run(run_id, "complete")
    store.close()
    return path


def timed(command: list[str]) -> float:
    """Wall seconds of one subprocess run; a failing command stops the benchmark with its error."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=user_environment())
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="alternating rounds (15)")
    args = parser.parse_args()

    # The script beside this interpreter, not a shim found on PATH (pyenv's shims add a bash hop).
    ecap_script = shutil.which("ecap", path=str(Path(sys.executable).parent))
    if ecap_script is None:
        sys.exit(f"no ecap console script beside {sys.executable} (pip install -e .)")
    print(
        f"Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs, "
        f"{platform.platform()}, load average {os.getloadavg()[0]:.2f}, bytecode caches on"
    )
    with tempfile.TemporaryDirectory(prefix="ecap-startup-") as tmp:
        store = small_store(Path(tmp))
        commands = {
            "import click": [sys.executable, "-c", "import click"],
            "--help": [ecap_script, "--help"],
            "plugins list": [ecap_script, "plugins", "list"],
            "runs list": [ecap_script, "runs", "list", "--store", str(store)],
            FLOOR: [sys.executable, "-c", LIBRARIES_ALONE.format(store=store)],
        }
        for command in commands.values():  # warm the page cache; not timed
            timed(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(timed(command))

    base = statistics.median(times["import click"])
    print(f"median of {args.runs} alternating runs, each a fresh process\n")
    print(f"{'command':32s} {'median':>9s} {'ratio':>7s} {'goal':>6s}")
    baseline = 'python -c "import click"'
    print(f"{baseline:32s} {base * 1000:7.0f} ms {1:6.2f}x")
    for name, goal in GOALS.items():
        median = statistics.median(times[name])
        ratio = median / base
        verdict = "met" if ratio <= goal else "NOT met"
        print(f"{'ecap ' + name:32s} {median * 1000:7.0f} ms {ratio:6.2f}x {goal:5.0f}x  {verdict}")
    floor = statistics.median(times[FLOOR])
    print(
        f"{'click + SQLAlchemy + rich alone':32s} {floor * 1000:7.0f} ms {floor / base:6.2f}x"
        "         (runs list's libraries, one query, no ecap code)"
    )


if __name__ == "__main__":
    main()
