"""What the end-to-end benchmarks share: the machine line, timings, generated image pairs, and
running ``ecap`` as a user does (a fresh process of the console script).

Kept in one place so that ``core_ingest.py`` and ``runner_overhead.py`` measure ecap the same way:
the wall time of the whole command, and the CPU time of that process, read from the OS.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``ecap`` with the fakes registered as if installed: argument 1 names the installed plugins to
#: load beside them, as ``ecap`` loads only the plugins a spec names (see ``Registry.deferred``).
RUN_WITH_FAKES = """
import sys
from ecap.cli import main
from ecap.plugins import set_registry
from ecap.testing import registry_with_fakes
set_registry(registry_with_fakes(only=sys.argv[1].split(",")))
main(sys.argv[2:])
"""


def describe_machine() -> str:
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"load average {os.getloadavg()[0]:.2f}; commands run with bytecode caches"
    )


def user_environment() -> dict[str, str]:
    """This environment, less ``PYTHONDONTWRITEBYTECODE``: an installed package runs from its
    bytecode caches (pip writes them; Python writes an editable install's on first import), so a
    command timed without them would compile ecap's modules at every start, as no user's does."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Timing:
    """Wall-clock seconds and CPU seconds (user + system) of one measured phase."""

    wall: float
    cpu: float


class Clock:
    """Times this process: wall clock and this process's CPU time."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def ecap_command() -> str:
    """The ecap console script beside this interpreter (a pyenv shim on PATH adds a bash hop)."""
    found = shutil.which("ecap", path=str(Path(sys.executable).parent))
    if found is None:
        sys.exit(f"no ecap console script beside {sys.executable} (pip install -e .)")
    return found


def run_ecap(
    args: list[str], *, with_fakes: Path | None = None, plugins: Sequence[str] = ()
) -> Timing:
    """Run ``ecap ARGS`` in a fresh process and time it, start-up included. With ``with_fakes``
    (a folder to write the runner script to), the fake plugins are registered too, beside the
    installed ``plugins`` the spec names (the others are not imported, as with ``ecap``)."""
    if with_fakes is None:
        return run_timed([ecap_command(), *args])
    script = with_fakes / "run_with_fakes.py"
    script.write_text(RUN_WITH_FAKES)
    return run_timed([sys.executable, str(script), ",".join(plugins), *args])


def run_timed(command: list[str]) -> Timing:
    """Run ``command`` and time it: wall clock, and the child's CPU time from the OS. A failing
    command stops the benchmark with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=user_environment())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu)


def write_pairs(folder: Path, count: int, size: int) -> Path:
    """Write ``count`` distinct pairs of ``size`` px images and a CSV listing them; return its path.

    Images up to 64 px are PNG with flat colours (like the test suite's); larger ones are JPEG
    (quality 90) of a colour plus noise drawn for each image, so that decoding costs what a photo
    of that size costs. Every image file differs from every other one (checked), so every pair
    has its own content hash and both sides of a benchmark write ``count`` pairs.
    """
    from PIL import Image, ImageChops

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    photo_like = size > 64
    levels = 192 if photo_like else 256  # 192: a colour plus noise in 0..63 never saturates
    rows, hashes = [], set()
    for i in range(count):
        names = []
        for side, blue in (("source", 0), ("target", levels // 2)):
            colour = (i % levels, (i // levels) % levels, (blue + i // levels**2) % levels)
            image = Image.new("RGB", (size, size), colour)
            if photo_like:
                noise = Image.effect_noise((size, size), 40).point(lambda v: v // 4)
                image = ImageChops.add(image, noise.convert("RGB"))
            name = f"{i:07d}-{side}.{'jpg' if photo_like else 'png'}"
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG" if photo_like else "PNG", quality=90)
            data = buffer.getvalue()
            hashes.add(hashlib.sha256(data).digest())
            (images / name).write_bytes(data)
            names.append(f"images/{name}")
        rows.append({"source": names[0], "target": names[1], "category": ("add", "remove")[i % 2]})
    if len(hashes) != 2 * count:
        raise RuntimeError(f"{2 * count - len(hashes)} generated images are not distinct")
    path = folder / "pairs.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
