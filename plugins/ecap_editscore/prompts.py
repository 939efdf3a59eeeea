"""The two prompts EditScore checkpoints were trained with, read at run time, never copied here.

The checkpoints' authors publish the prompt text in their own package (``editscore`` on PyPI,
module ``editscore/vie_prompts.py``): it is a model input, like a chat template, so it is read
from the installed package. The module is *parsed*, not imported: importing ``editscore`` pulls in
its whole inference stack, and only four string constants are needed. They are assembled as the
package assembles them:

- semantic consistency: the shared context, the two-image rule and the scoring rule (whose
  ``<instruction>`` placeholder takes the instruction), joined by newlines;
- perceptual quality: the shared context and the quality rule;

and in both rule texts every ``10`` becomes the score range (the released checkpoints answer on
0-25).

``prompt_file:`` names a YAML file with the two final templates instead (keys
``semantic_consistency`` and ``perceptual_quality``; the first must contain ``<instruction>``), for
a machine where the package cannot be installed or for a prompt of one's own. Such text is used as
written: its scale must be the configured ``score_range``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from ecap.errors import EcapError

PLACEHOLDER = "<instruction>"
PACKAGE = "editscore"
#: Where in the package the text lives, and the constants the prompts are built from.
MODULE_FILE = "vie_prompts.py"
CONTEXT = "_context_no_delimit_reasoning_first"
TWO_IMAGE_RULE = "_prompts_0shot_two_image_edit_rule"
CONSISTENCY_RULE = "_prompts_0shot_tie_rule_SC"
QUALITY_RULE = "_prompts_0shot_rule_PQ"
INSTALL_HINT = (
    "pip install editscore --no-deps (only its prompt text is read), "
    "or name your own prompts with prompt_file:"
)


@dataclass(frozen=True)
class Prompts:
    """The two templates and where they came from."""

    semantic_consistency: str
    perceptual_quality: str
    origin: str  # "editscore 0.2 (<path>)" or the prompt file

    def consistency_for(self, instruction: str) -> str:
        return self.semantic_consistency.replace(PLACEHOLDER, instruction)

    def digest(self) -> str:
        """What the answers depend on: both texts (not where they were read)."""
        material = f"{self.semantic_consistency}\0{self.perceptual_quality}"
        return hashlib.sha256(material.encode()).hexdigest()


def load_prompts(prompt_file: Path | None, score_range: int) -> Prompts:
    """The prompts from ``prompt_file`` when given, else from the installed package."""
    if prompt_file is not None:
        return from_file(prompt_file)
    return from_package(score_range)


def from_file(path: Path) -> Prompts:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EcapError(f"cannot read prompt_file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise EcapError(
            f"{path}: expected a mapping with semantic_consistency and perceptual_quality"
        )
    texts = {}
    for key in ("semantic_consistency", "perceptual_quality"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise EcapError(f"{path}: {key} must be a non-empty string")
        texts[key] = value
    if PLACEHOLDER not in texts["semantic_consistency"]:
        raise EcapError(f"{path}: semantic_consistency must contain {PLACEHOLDER}")
    unknown = sorted(set(data) - set(texts))
    if unknown:
        raise EcapError(f"{path}: unknown keys {', '.join(unknown)}")
    return Prompts(**texts, origin=str(path))


def from_package(score_range: int) -> Prompts:
    spec = importlib.util.find_spec(PACKAGE)  # a top-level lookup: nothing is executed
    if spec is None or not spec.submodule_search_locations:
        raise EcapError(f"the EditScore prompts come from the package {PACKAGE!r}: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODULE_FILE
    constants = string_constants(path)
    missing = [
        name
        for name in (CONTEXT, TWO_IMAGE_RULE, CONSISTENCY_RULE, QUALITY_RULE)
        if name not in constants
    ]
    if missing:
        raise EcapError(
            f"{path} does not define {', '.join(missing)}: this version of {PACKAGE} is not "
            f"one ecap knows; use prompt_file:"
        )
    scale = str(score_range)
    consistency = "\n".join(
        [
            constants[CONTEXT],
            constants[TWO_IMAGE_RULE],
            constants[CONSISTENCY_RULE].replace("10", scale),
        ]
    )
    quality = "\n".join([constants[CONTEXT], constants[QUALITY_RULE].replace("10", scale)])
    if PLACEHOLDER not in consistency:
        raise EcapError(f"{path}: the consistency rule has no {PLACEHOLDER} placeholder")
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown version"
    return Prompts(consistency, quality, origin=f"{PACKAGE} {version} ({path})")


def string_constants(path: Path) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments of a Python file, read without running it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise EcapError(f"cannot read the EditScore prompts from {path}: {exc}") from exc
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


__all__ = ["PLACEHOLDER", "Prompts", "from_file", "from_package", "load_prompts"]
