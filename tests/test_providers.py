"""ecap.providers: one layer for hosted models, shared by judges and captioners.

One key convention (``api_key``, usually ``${env:VAR}``), one two-image layout that every
provider renders in its own protocol, and no code copied between the two families.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from pathlib import Path

import pytest

from ecap.errors import EcapError
from ecap.providers import HostedEndpoint, two_image_content, two_image_layout
from ecap.testing import FakeLLMServer

ROOT = Path(__file__).resolve().parents[1]
OPENAI = ("OPENAI_API_KEY",)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OPENAI_API_KEY", "MOONSHOT_API_KEY", "MY_KEY"):
        monkeypatch.delenv(variable, raising=False)


def test_api_key_is_the_key_and_an_empty_one_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-the-environment")
    assert HostedEndpoint(api_key="sk-written").key(OPENAI) == "sk-written"
    assert HostedEndpoint(api_key="").key(OPENAI) == "from-the-environment"  # ${env:X:-}


def test_without_a_key_each_server_gets_its_own_variable_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    monkeypatch.setenv("MOONSHOT_API_KEY", "moonshot-key")
    assert HostedEndpoint().key(OPENAI) == "openai-key"  # the provider's own API
    moonshot = HostedEndpoint(base_url="https://api.moonshot.ai/v1")
    assert moonshot.key(OPENAI) == "moonshot-key"  # a known hosted API: its standard variable
    assert HostedEndpoint(base_url="http://127.0.0.1:8000/v1").key(OPENAI) == "EMPTY"
    gateway = HostedEndpoint(base_url="https://gateway.example.com/v1")
    assert gateway.key(OPENAI) is None  # OpenAI's key never goes to another server
    with pytest.raises(EcapError, match=r"gateway.example.com/v1 is not the provider's own API"):
        gateway.require_key(OPENAI)


def test_api_key_env_still_works_and_says_it_is_deprecated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_KEY", "named-key")
    with caplog.at_level(logging.WARNING, logger="ecap.providers"):
        endpoint = HostedEndpoint(api_key_env="MY_KEY")
    assert endpoint.key(OPENAI) == "named-key"
    assert "api_key_env is deprecated: write api_key: ${env:MY_KEY} instead" in caplog.text
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(EcapError, match=r"no API key: \$MY_KEY is not set"):
        endpoint.require_key(OPENAI)


def test_one_layout_rendered_by_each_protocol() -> None:
    assert two_image_layout(("Source image:", "Edited image:"), "Judge it.") == [
        "Source image:",
        0,
        "Edited image:",
        1,
        "Judge it.",
    ]
    assert two_image_layout((None, None), "p") == [0, 1, "p"]
    content = two_image_content(("S:", "data:a"), ("T:", "data:b"), "p")
    assert [p.get("text") or p["image_url"]["url"] for p in content] == [
        "S:",
        "data:a",
        "T:",
        "data:b",
        "p",
    ]


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_both_judges_label_the_two_images_alike(provider: str) -> None:
    from ecap_judges.engine import JudgeRequest
    from ecap_judges.gemini import GeminiJudgeConfig, GeminiProvider
    from ecap_judges.openai_judge import OpenAIJudgeConfig, OpenAIProvider

    png = b"\x89PNG\r\n\x1a\n"
    request = JudgeRequest(
        model="m",
        system="You judge.",
        prompt="Score the edit.",
        images=((png + b"source", "image/png"), (png + b"target", "image/png")),
        schema=None,
        temperature=0.0,
        max_output_tokens=64,
    )
    with FakeLLMServer(lambda _: "ok") as server:
        if provider == "gemini":
            judge = GeminiProvider(GeminiJudgeConfig(base_url=server.url, api_key="k"))
        else:
            config = OpenAIJudgeConfig(base_url=server.openai_base_url, api_key="k")
            judge = OpenAIProvider(config)

        async def ask() -> str:
            try:
                return (await judge.send(request, 10)).text
            finally:
                await judge.aclose()

        assert asyncio.run(ask()) == "ok"
        (call,) = server.calls
    assert call.texts == ("Source image:", "Edited image:", "Score the edit.")
    assert call.images == (png + b"source", png + b"target")


def _code_lines(path: Path) -> list[str]:
    """A module's code lines, whitespace-normalised, without blanks, comments, docstring-only
    lines, imports and lines too short to mean anything alone (``)``, ``else:``)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = " ".join(raw.split())
        if len(line) < 12 or line.startswith(("#", "from ", "import ", '"""')):
            continue
        lines.append(line)
    return lines


def test_no_block_of_six_lines_is_copied_between_the_judges_and_the_captioners() -> None:
    judges = [ROOT / "plugins/ecap_judges" / n for n in ("gemini.py", "openai_judge.py")]
    backends = [
        ROOT / "plugins/ecap_vlm/backends" / n
        for n in ("gemini.py", "openai_compat.py", "remote.py")
    ]

    def windows(path: Path) -> set[tuple[str, ...]]:
        lines = _code_lines(path)
        return {tuple(lines[i : i + 6]) for i in range(len(lines) - 5)}

    shared = [
        (a.name, b.name, re.sub(r"\s+", " ", " | ".join(w))[:160])
        for a, b in itertools.product(judges, backends)
        for w in windows(a) & windows(b)
    ]
    assert not shared
