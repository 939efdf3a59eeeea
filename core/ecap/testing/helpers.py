"""Helpers for tests: tiny image pairs on disk, a registry with the fakes, running a spec.

Each helper imports the parts of ecap it uses when called: writing pairs loads no store.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..runner import RunResult
    from ..store import Store

CATEGORIES = ("color", "add", "remove", "move", "style", "global")


def make_pairs(
    folder: Path,
    count: int = 6,
    *,
    corrupt: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
    name: str = "pairs.csv",
) -> Path:
    """Write ``count`` distinct 16x16 PNG pairs and a CSV listing them; return the CSV's path.

    Pair ``i`` has category ``CATEGORIES[i % 6]``. Rows in ``corrupt`` point at a file that is not
    an image; rows in ``missing`` point at a file that does not exist.
    """
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        source, target = images / f"{i}-source.png", images / f"{i}-target.png"
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 40)).save(source)
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 200)).save(target)
        if i in corrupt:
            target.write_bytes(b"this is not a PNG")
        if i in missing:
            target.unlink()
        rows.append(
            {
                "source": f"images/{source.name}",
                "target": f"images/{target.name}",
                "category": CATEGORIES[i % len(CATEGORIES)],
                "instruction": f"Make pair {i} bluer.",
                "overall": f"pair {i} turns blue",
            }
        )
    path = folder / name
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def registry_with_fakes(only: Collection[str] | None = None) -> Registry:
    """The installed plugins plus the fakes, registered as ``fake`` through the normal hooks.
    ``only`` names the installed plugins (entry points) to load beside the fakes, as ``ecap``
    loads only those a spec names; default: all of them."""
    from ..plugins import build_registry, selected_entry_points
    from .fakes import FakePlugins

    entry_points = selected_entry_points()
    if only is not None:
        entry_points = [ep for ep in entry_points if ep.name in only]
    return build_registry(
        extra_plugins=[("ecap-testing-fakes", FakePlugins())], entry_points=entry_points
    )


def run_spec(
    spec_path: Path,
    store: Store | str | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> RunResult:
    """Load and run a spec (default store: ecap.db next to it), without progress bars."""
    from ..runner import Runner, RunOptions
    from ..spec import load_spec
    from ..store import Store

    spec = load_spec(spec_path, registry or registry_with_fakes())
    if store is None or isinstance(store, str):
        from ..cli.common import store_url

        store = Store(store_url(store or spec.store, spec.base_dir))
    options.setdefault("progress", False)
    options.setdefault("retry_delay", 0.01)
    return Runner(spec, store, RunOptions(**options)).run()


def query_store(store: str | Path, statement: Any) -> list[Any]:
    """The scalars a SQLAlchemy ``select`` returns from a store (a URL or a SQLite file path),
    e.g. ``query_store(tmp_path / "ecap.db", select(VerdictRow))``, for assertions in tests."""
    from sqlalchemy.orm import Session

    from ..store import Store

    url = str(store) if "://" in str(store) else f"sqlite:///{store}"
    opened = Store(url)
    try:
        with Session(opened.engine) as session:
            return list(session.scalars(statement))
    finally:
        opened.close()


def start_step_run(
    store: Any,
    *,
    step_id: str = "pairs",
    kind: str = "source",
    plugin: str = "csv",
    step_key: str = "ecap1:step",
    run_name: str = "t",
    config: dict[str, Any] | None = None,
) -> str:
    """A run and one running step run in ``store``, for tests that write records or claims
    directly through the :class:`~ecap.store.Store` API; returns the step run's id."""
    run = store.start_run(
        name=run_name,
        spec_path="spec.yaml",
        spec_text="steps: {}",
        spec_hash="0" * 64,
        ecap_version="test",
        plugins={},
    )
    return str(
        store.start_step(
            run_id=run,
            step_id=step_id,
            kind=kind,
            plugin=plugin,
            plugin_version="1",
            package="editcaption",
            config=config or {},
            step_key=step_key,
        )
    )


def kill_run_when(
    command: list[str],
    ready: Callable[[], bool],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> None:
    """Start ``command`` (e.g. ``ecap pipeline run``), SIGKILL it as soon as ``ready()`` is true
    (or after ``timeout`` seconds), and wait for it: how tests show that a killed run resumes."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def count_api_calls(store: str | Path, status: str) -> int:
    """Rows of the store's call log with this status (ok, error, rejected, submitted)."""
    from sqlalchemy import func, select

    from ..store.schema import ApiCall

    return int(query_store(store, select(func.count()).where(ApiCall.status == status))[0])
