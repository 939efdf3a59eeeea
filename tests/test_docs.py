"""The docs keep up with the code: every hook and every command is documented."""

from __future__ import annotations

import inspect
import re
import shlex
import shutil
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

import ecap.hookspecs
from ecap.cli import _add_plugin_commands, cli

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def all_docs() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


def hookspecs(module: Any = ecap.hookspecs) -> dict[str, Callable[..., Any]]:
    """Every function that pluggy's ``HookspecMarker("ecap")`` marked in ``module``."""
    marker = f"{ecap.hookspecs.hookspec.project_name}_spec"
    return {
        name: fn
        for name, fn in vars(module).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def hook_signature(name: str, fn: Callable[..., Any]) -> str:
    """``name(param, ...)``: how docs/plugins.md writes a hook."""
    return f"{name}({', '.join(inspect.signature(fn).parameters)})"


def undocumented_hooks(text: str, module: Any = ecap.hookspecs) -> list[str]:
    signatures = [hook_signature(name, fn) for name, fn in hookspecs(module).items()]
    return [s for s in signatures if not re.search(rf"^\s*{re.escape(s)}\s*$", text, re.M)]


def command_paths(group: click.Group, prefix: str = "ecap") -> Iterator[str]:
    """``ecap <group> <command>`` for every command, groups included, at any depth."""
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


def undocumented_commands(text: str, group: click.Group = cli) -> list[str]:
    return [p for p in command_paths(group) if not re.search(rf"{re.escape(p)}\b", text)]


def test_the_hookspecs_are_found() -> None:
    found = hookspecs()
    assert "register_captioners" in found and "register_commands" in found
    assert "hookspec" not in found and "hookimpl" not in found


def test_every_hookspec_is_documented_with_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text()
    assert "## Hook reference" in text
    missing = undocumented_hooks(text)
    assert not missing, f"docs/plugins.md lacks a line with each of: {missing}"


def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    paths = list(command_paths(cli))
    assert "ecap pipeline run" in paths and "ecap schema" in paths
    missing = undocumented_commands(text)
    assert not missing, f"docs/cli.md does not mention: {missing}"


def test_the_checks_catch_what_is_missing() -> None:
    """The checks above fail on an undocumented hook, a changed signature, or a new command."""

    @ecap.hookspecs.hookspec
    def register_widgets(register: Any, extra: Any) -> None:
        """A hook that no page documents."""

    def helper(register: Any) -> None:
        """Not a hookspec: never required."""

    Specs = types.ModuleType("specs")
    Specs.register_captioners = ecap.hookspecs.register_captioners  # type: ignore[attr-defined]
    Specs.register_widgets = register_widgets  # type: ignore[attr-defined]
    Specs.helper = helper  # type: ignore[attr-defined]

    assert undocumented_hooks("register_captioners(register)\n", Specs) == [
        "register_widgets(register, extra)"
    ]
    assert undocumented_hooks("register_widgets(register)\n", Specs) == [
        "register_captioners(register)",
        "register_widgets(register, extra)",
    ]
    assert undocumented_hooks("see register_captioners(register) below\n", Specs)

    @click.group()
    def root() -> None: ...

    @root.group("things")
    def things() -> None: ...

    @things.command("frob")
    def frob() -> None: ...

    @root.command("solo")
    def solo() -> None: ...

    assert undocumented_commands("ecap things\necap solo\n", root) == ["ecap things frob"]
    assert undocumented_commands("ecap things frobnicate\necap solo", root) == ["ecap things frob"]
    assert not undocumented_commands("`ecap things frob`, `ecap solo`", root)


@pytest.mark.parametrize("page", ["index", "specs", "runner", "store", "cli", "plugins"])
def test_relative_links_between_pages_resolve(page: str) -> None:
    text = (DOCS / f"{page}.md").read_text()
    for target in re.findall(r"\]\(([a-z]+\.md)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"docs/{page}.md links to missing {target}"


def test_every_command_plugins_add_is_documented_somewhere() -> None:
    """Core commands are in docs/cli.md (above); a plugin's commands in any page of docs/."""
    _add_plugin_commands()
    missing = undocumented_commands(all_docs())
    assert not missing, f"no page of docs/ mentions: {missing}"


def built_in_plugins() -> list[tuple[str, str]]:
    """(kind, name) of every plugin this repository ships (packages ecap_* under plugins/)."""
    from ecap.plugins import get_registry

    return sorted(
        (kind, name)
        for (kind, name), info in get_registry().plugins.items()
        if info.cls.__module__.startswith("ecap_")
    )


def undocumented_plugins(text: str, plugins: list[tuple[str, str]]) -> list[str]:
    """Plugins that no page names as ``kind: name`` (as a spec writes it) or as `` `name` ``."""
    return [
        f"{kind}: {name}"
        for kind, name in plugins
        if not re.search(rf"\b{kind}:\s*{re.escape(name)}\b|`{re.escape(name)}`", text)
    ]


def test_every_built_in_plugin_is_documented() -> None:
    plugins = built_in_plugins()
    assert ("source", "csv") in plugins and ("judge", "gemini") in plugins
    missing = undocumented_plugins(all_docs(), plugins)
    assert not missing, f"no page of docs/ documents: {missing}"
    assert (
        undocumented_plugins("use `source: csv` or `hf`", [("source", "csv"), ("export", "hf")])
        == []
    )
    assert undocumented_plugins("csv files", [("source", "csv")]) == ["source: csv"]


def test_the_specs_page_shows_the_current_tour() -> None:
    text = (DOCS / "specs.md").read_text()
    block = re.search(r"```yaml\n(name: tour\n.*?)```", text, re.S)
    assert block, "docs/specs.md has no tour spec"
    shipped = yaml.safe_load((REPO / "examples" / "quickstart" / "tour.yaml").read_text())
    assert yaml.safe_load(block.group(1)) == shipped


def quickstart_commands() -> list[list[str]]:
    text = (DOCS / "cli.md").read_text()
    section = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/cli.md has no quickstart commands"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines[0] == "cd examples/quickstart"
    return [shlex.split(line) for line in lines[1:]]


@pytest.mark.slow
def test_the_cli_pages_quickstart_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    target = tmp_path / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns("ecap.db*", "out")
    )
    monkeypatch.chdir(target)
    monkeypatch.delenv("ECAP_STORE", raising=False)
    commands = quickstart_commands()
    assert {c[1] for c in commands} >= {"pipeline", "runs", "export"}
    for command in commands:
        assert command[0] == "ecap"
        result = CliRunner().invoke(cli, command[1:])
        assert result.exit_code == 0, f"{' '.join(command)}:\n{result.output}"
