"""The import rules of docs/architecture.md, checked on the source itself.

- the core (``ecap``) never imports a plugin package (``ecap_*``): built-in plugins are found
  through entry points exactly like third-party ones;
- plugins never import CLI internals (``ecap.cli``; ``ecap.cli_api`` is their public module) nor
  the store's table layouts (``ecap.store.schema``): they read the store through its API;
- a plugin never imports another plugin: what two share lives in the core, and one that drives
  another finds it through the registry;
- ``ecap.testing`` imports no built-in plugin;
- no module imports a heavy dependency at import time (only inside the function that needs it),
  so ``ecap --help`` and ``import ecap_<plugin>`` stay fast whatever is installed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "ecap"
PLUGINS = ROOT / "plugins"
HEAVY = {
    "torch",
    "transformers",
    "trl",
    "peft",
    "deepspeed",
    "vllm",
    "ray",
    "openai",
    "google.genai",
    "httpx",
    "accelerate",
    "datasets",
    "matplotlib",
    "scipy",
    "numpy",
    "label_studio_sdk",
}
#: Modules whose whole point is to be imported only when their heavy dependency is wanted.
HEAVY_BY_DESIGN = {
    "ecap/testing/tiny_vlm.py",  # builds torch models; imported by fixtures on demand
    "ecap/testing/tiny_trainer_data.py",
    "ecap_trl/worker.py",  # the training process the launchers start
}


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, whether at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    guarded = {
        id(child)
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) in top_level


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    base = CORE.parent if path.is_relative_to(CORE) else PLUGINS
    return path.relative_to(base).as_posix()


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _a_plugin(module: str) -> bool:
    return module.split(".")[0].startswith("ecap_")


def _importers(folder: Path, forbidden: Callable[[Path, str], bool]) -> list[str]:
    """``"<file> imports <module>"`` for every import under ``folder`` that ``forbidden`` (given
    the importing file and the module) refuses."""
    return [
        f"{_name(path)} imports {module}"
        for path in _sources(folder)
        for module, _ in _imports(path)
        if forbidden(path, module)
    ]


def test_the_core_never_imports_a_plugin() -> None:
    offenders = _importers(CORE, lambda _, module: _a_plugin(module))
    assert not offenders


@pytest.mark.parametrize("forbidden", ["ecap.cli", "ecap.store.schema"])
def test_plugins_use_public_apis_only(forbidden: str) -> None:
    offenders = _importers(PLUGINS, lambda _, module: _is(module, forbidden))
    assert not offenders


def test_a_plugin_never_imports_another_plugin() -> None:
    offenders = _importers(
        PLUGINS,
        lambda path, module: (
            _a_plugin(module) and module.split(".")[0] != _name(path).split("/")[0]
        ),
    )
    assert not offenders


def test_ecap_testing_imports_no_built_in_plugin() -> None:
    offenders = _importers(CORE / "testing", lambda _, module: _a_plugin(module))
    assert not offenders


def test_heavy_dependencies_are_imported_lazily() -> None:
    offenders = [
        f"{_name(path)} imports {module} at import time"
        for path in [*_sources(CORE), *_sources(PLUGINS)]
        if _name(path) not in HEAVY_BY_DESIGN
        for module, top_level in _imports(path)
        if top_level and any(_is(module, heavy) for heavy in HEAVY)
    ]
    assert not offenders
