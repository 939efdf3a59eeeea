"""``ecap view`` in a real browser: Playwright driving Debian's Chromium against the command itself.

The server is ``python -m ecap.cli view`` on a free loopback port, over a store built by running a
spec (see :func:`test_view.build_view_store`). A person's path through the page is followed by
clicking links, as a person would: run -> step -> pair -> lineage -> report, then a search that a
filter narrows. Screenshots of every page are saved in the test's temporary folder.

Playwright's own browser download cannot be reached on the machines that run these tests, so the
system's Chromium is used (``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ECAP_TEST_CHROMIUM", "/usr/bin/chromium")

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright: pip install -e '.[dev]'"
)
pytest.importorskip("starlette", reason="needs the view extra: pip install 'editcaption[view]'")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)

from test_view import ViewStore, build_view_store  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def built(tmp_path: Path, ecap_registry) -> ViewStore:
    return build_view_store(tmp_path, f"sqlite:///{tmp_path / 'ecap.db'}")


@pytest.fixture
def server(built: ViewStore) -> Iterator[str]:
    """``ecap view`` serving the store, as a user starts it; its address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ecap.cli", "view", "--store", built.url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"ecap view did not start: {output}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            yield page
        finally:
            browser.close()


def images_render(page, selector: str, timeout: float = 10.0) -> list[int]:
    """The natural widths of the images ``selector`` matches, once they have all loaded (polled
    from here: the page's policy forbids the string evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + timeout
    while not page.eval_on_selector_all(selector, "images => images.every(i => i.complete)"):
        assert time.monotonic() < deadline, f"images {selector} did not load"
        time.sleep(0.05)
    return page.eval_on_selector_all(selector, "images => images.map(i => i.naturalWidth)")


def test_a_person_walks_from_a_run_to_a_pair_its_lineage_and_the_report(
    server, built, page, tmp_path
):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []  # script errors, refused resources, policy violations
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server + "/")
    page.screenshot(path=shots / "runs.png", full_page=True)

    page.get_by_role("link", name=built_run_link(page, "view-test")).click()
    assert page.locator("#steps").get_by_role("link", name="judged").is_visible()
    assert "ScriptedFailure" in page.content()
    page.screenshot(path=shots / "run.png", full_page=True)

    page.locator("#steps").get_by_role("link", name="pairs", exact=True).click()
    assert page.locator("h1").inner_text().startswith("Step pairs")
    thumbnails = images_render(page, "#records img")
    assert thumbnails and all(width == 16 for width in thumbnails)
    page.screenshot(path=shots / "step.png", full_page=True)

    page.locator(f'#records a[href="/pairs/{built.pairs["color"]}"]').last.click()
    assert images_render(page, ".images img") == [16, 16]
    assert "Turn the red square blue, keep the background." in page.content()
    assert "P0:viewpoint" in page.content()
    page.locator(".compare .slider").fill("100")  # slide all the way to the target
    overlay = page.locator(".compare img.over")
    assert "inset(0px 0px 0px 0%)" in overlay.evaluate("i => getComputedStyle(i).clipPath")
    page.screenshot(path=shots / "pair.png", full_page=True)

    page.locator(f'a[href="/records/{built.model_instruction}/lineage"]').click()
    assert page.locator("h1").inner_text().startswith("Lineage of instruction")
    origins = page.locator(".lineage section").first
    assert origins.get_by_role("link", name=built.pairs["color"][:12]).is_visible()
    page.screenshot(path=shots / "lineage.png", full_page=True)

    page.locator("header").get_by_role("link", name="Report").click()
    assert page.locator("svg.curve polyline").count() >= 1
    page.screenshot(path=shots / "report.png", full_page=True)

    page.locator("header").get_by_role("link", name="Search").click()
    everything = page.locator("tr.hit").count()
    page.locator("input[name=category]").fill("color")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/search?*category=color*")
    narrowed = page.locator("tr.hit").count()
    assert 0 < narrowed < everything
    assert narrowed == 4
    assert all(w == 16 for w in images_render(page, "tr.hit img"))
    page.screenshot(path=shots / "search.png", full_page=True)

    for name in ("runs", "run", "step", "pair", "lineage", "report", "search"):
        assert (shots / f"{name}.png").stat().st_size > 1000
    assert problems == []


def built_run_link(page, name: str) -> str:
    """The text of the link to the run called ``name`` on the runs page (its short id)."""
    row = page.locator("#runs tr", has_text=name)
    return row.get_by_role("link").inner_text()
