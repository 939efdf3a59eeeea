"""Pipeline specs: YAML -> validated pydantic models, with every error at file:line: field.

A spec is checked entirely before any work starts: unknown kinds, plugins and ``from:`` steps get
"did you mean" suggestions, each plugin validates its own ``with:`` block against its config model,
and cycles are reported. All problems are collected and shown together.
"""

from __future__ import annotations

import difflib
import graphlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import SpecError, SpecProblem, did_you_mean
from .executors import ExecutorConfig
from .interfaces import KINDS, PluginConfig
from .models import StepModel
from .plugins import PluginInfo, Registry, get_registry

ENV_PATTERN = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
Path_ = tuple[str, ...]
M = TypeVar("M", bound=BaseModel)
_SCALARS = yaml.constructor.SafeConstructor()
#: Values a spec may expand to, and how deep it may nest. YAML aliases (``*name``) share nodes, so
#: a few hundred bytes of aliases of aliases name a billion values; building them must stop early.
MAX_SPEC_VALUES = 20_000
MAX_SPEC_DEPTH = 64


class StepOptions(BaseModel):
    """Runner settings of a step. Transport only: none of them enters a cache key."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1)
    concurrency: int = Field(1, ge=1, description="batches in flight for async plugins")
    retries: int = Field(2, ge=0, description="retries of a batch whose call raised")
    max_error_rate: float = Field(
        0.5, ge=0, le=1, description="the step fails when more than this share of samples fail"
    )


@dataclass
class Step:
    id: str
    kind: str
    plugin: PluginInfo
    config: PluginConfig
    raw_config: dict[str, Any]
    inputs: list[str]
    options: StepOptions
    line: int | None
    #: Train steps whose models this step's config names (``model: {step: NAME}``): upstream
    #: dependencies that hand over a model rather than items.
    models: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def needs(self) -> list[str]:
        """Every step this one waits for: its ``from:`` steps and the steps whose models it uses."""
        return list(dict.fromkeys([*self.inputs, *self.models.values()]))


@dataclass
class Spec:
    name: str
    path: Path
    text: str
    store: str | None
    steps: dict[str, Step]
    secret_paths: set[Path_] = field(default_factory=set)
    #: Where model steps compute (``executor:``); ``None``: in this process.
    executor: ExecutorConfig | None = None

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def order(self) -> list[str]:
        """Step ids in dependency order (ties in spec order)."""
        sorter = graphlib.TopologicalSorter({s.id: s.needs for s in self.steps.values()})
        position = {sid: i for i, sid in enumerate(self.steps)}
        sorter.prepare()
        ordered: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            ordered.extend(ready)
            sorter.done(*ready)
        return ordered

    def downstream(self, step_id: str) -> set[str]:
        found: set[str] = set()
        frontier = [step_id]
        while frontier:
            current = frontier.pop()
            for s in self.steps.values():
                if current in s.needs and s.id not in found:
                    found.add(s.id)
                    frontier.append(s.id)
        return found


class _Located:
    """YAML loaded into plain Python, remembering the line of every path, and which values came
    from the environment (those are secrets-by-default when a config is stored)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.env_paths: set[Path_] = set()
        self.problems: list[SpecProblem] = []
        self.built = 0

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.built += 1
        if len(path) > MAX_SPEC_DEPTH:
            self.refuse(node, f"nests deeper than {MAX_SPEC_DEPTH} levels (an alias in itself?)")
        if self.built > MAX_SPEC_VALUES:
            self.refuse(
                node,
                f"expands to more than {MAX_SPEC_VALUES} values: YAML aliases (*name) of "
                "aliases? Write the values out instead",
            )
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                if key in out:
                    self.problem((*path, key), "duplicate key")
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, str(i))) for i, child in enumerate(node.value)]
        value = _SCALARS.construct_object(node)
        if isinstance(value, str) and "${env:" in value:
            value = self.interpolate(value, path)
        return value

    def interpolate(self, value: str, path: Path_) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            self.problem(
                path,
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{env:{name}:-value}})",
            )
            return ""

        self.env_paths.add(path)
        for match in ENV_PATTERN.finditer(value):
            if _unmatched_brace(value, match.end()):
                self.problem(
                    path,
                    f"'}}' after {match.group(0)}: a default cannot contain '}}' "
                    "(the reference ends at the first one)",
                )
        return ENV_PATTERN.sub(substitute, value)

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(SpecProblem(self.file, self.line(path), ".".join(path), message))

    def refuse(self, node: yaml.Node, why: str) -> NoReturn:
        """Stop building: the document is too big to build, whatever else is wrong with it."""
        raise SpecError([SpecProblem(self.file, node.start_mark.line + 1, "", f"the spec {why}")])


def _unmatched_brace(text: str, start: int) -> bool:
    """Whether a ``}`` without its ``{`` follows ``start`` before the next ``${env:``: the rest of
    a default that held a ``}``, which would otherwise be cut short without a word."""
    end = text.find("${env:", start)
    depth = 0
    for char in text[start : end if end >= 0 else len(text)]:
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return True
            depth -= 1
    return False


STEP_KEYS = {"from", "with", *StepOptions.model_fields}
TOP_LEVEL_KEYS = ("name", "description", "store", "executor", "steps")


def load_spec(path: str | Path, registry: Registry | None = None) -> Spec:
    """Read, interpolate and validate a spec file; :class:`SpecError` lists every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(
            [SpecProblem(str(path), None, "", f"cannot read spec: {exc.strerror}")]
        ) from exc
    return parse_spec(text, path, registry or get_registry())


def parse_spec(text: str, path: Path, registry: Registry) -> Spec:
    located = _Located(str(path))
    try:
        node = yaml.compose(text)
    except RecursionError as exc:
        raise SpecError(
            [SpecProblem(str(path), None, "", "invalid YAML: nested too deeply")]
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([SpecProblem(str(path), line, "", f"invalid YAML: {exc}")]) from exc
    doc = located.build(node) if node is not None else None
    if not isinstance(doc, dict):
        raise SpecError(
            [SpecProblem(str(path), 1, "", "a spec is a mapping with 'name' and 'steps'")]
        )

    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            located.problem(
                (key,),
                f"unknown top-level key{did_you_mean(key, TOP_LEVEL_KEYS)}",
            )
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        located.problem(("steps",), "'steps' must be a non-empty mapping of step id -> step")
        raise SpecError(located.problems)

    steps: dict[str, Step] = {}
    for step_id, raw in raw_steps.items():
        step = _parse_step(step_id, raw, located, registry)
        if step:
            steps[step_id] = step

    for step in steps.values():
        for i, upstream in enumerate(step.inputs):
            if upstream not in raw_steps:
                located.problem(
                    ("steps", step.id, "from", str(i))
                    if len(step.inputs) > 1
                    else ("steps", step.id, "from"),
                    f"unknown step '{upstream}'{did_you_mean(upstream, raw_steps)}",
                )
    for step in steps.values():
        for field_path, upstream in step.models.items():
            where = ("steps", step.id, "with", *field_path, "step")
            if upstream not in raw_steps:
                located.problem(
                    where, f"unknown step '{upstream}'{did_you_mean(upstream, raw_steps)}"
                )
            elif upstream in steps and KINDS[steps[upstream].kind].contract.produces != "model":
                located.problem(
                    where,
                    f"step '{upstream}' is a {steps[upstream].kind} step and makes no model; "
                    "name a train step",
                )
    if not located.problems:
        try:
            graphlib.TopologicalSorter({s.id: s.needs for s in steps.values()}).prepare()
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            located.problem(("steps", exc.args[1][0], "from"), f"steps form a cycle: {cycle}")
    executor = None
    if doc.get("executor") is not None:
        raw_executor = doc["executor"]
        if isinstance(raw_executor, str):  # ``executor: ray`` is short for ``{type: ray}``
            raw_executor = {"type": raw_executor}
        if isinstance(raw_executor, dict):
            executor = _validate(ExecutorConfig, raw_executor, ("executor",), located, None)
        else:
            located.problem(("executor",), "'executor' is local, ray or a mapping {type: ray}")
    if located.problems:
        raise SpecError(located.problems)

    name = doc.get("name") or path.stem
    return Spec(
        name=str(name),
        path=path.resolve(),
        text=text,
        store=doc.get("store"),
        steps=steps,
        secret_paths=located.env_paths,
        executor=executor,
    )


def _parse_step(step_id: str, raw: Any, located: _Located, registry: Registry) -> Step | None:
    where: Path_ = ("steps", step_id)
    if not isinstance(raw, dict):
        located.problem(where, "a step is a mapping like {caption: vlm, from: pairs, with: {...}}")
        return None
    kinds = [k for k in raw if k in KINDS]
    for key in raw:
        if key not in KINDS and key not in STEP_KEYS:
            located.problem(
                (*where, key),
                f"unknown step key{did_you_mean(key, [*KINDS, *STEP_KEYS])}",
            )
    if len(kinds) != 1:
        located.problem(
            where,
            "a step needs exactly one kind key, one of: "
            + ", ".join(KINDS)
            + f" (found {len(kinds)})",
        )
        return None
    kind = kinds[0]
    plugin_name = raw[kind]
    try:
        info = registry.get(kind, str(plugin_name))
    except Exception as exc:
        located.problem((*where, kind), str(exc))
        return None

    inputs = raw.get("from", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        located.problem((*where, "from"), "'from' is a step id or a list of step ids")
        inputs = []
    takes_input = KINDS[kind].contract.takes_input
    if not takes_input and inputs:
        located.problem((*where, "from"), f"a {kind} step reads its own input and takes no 'from'")
    if takes_input and not inputs:
        located.problem(where, f"a {kind} step needs 'from: <upstream step>'")

    raw_config = raw.get("with") or {}
    if not isinstance(raw_config, dict):
        located.problem((*where, "with"), "'with' must be a mapping of plugin settings")
        return None
    config = _validate(
        info.cls.Config, raw_config, (*where, "with"), located, f"ecap plugins show {plugin_name}"
    )
    options = _validate(
        StepOptions,
        {k: v for k, v in raw.items() if k in StepOptions.model_fields},
        where,
        located,
        None,
    )
    if config is None or options is None:
        return None
    return Step(
        step_id,
        kind,
        info,
        config,
        raw_config,
        inputs,
        options,
        located.line(where),
        dict(_model_refs(config)),
    )


def _model_refs(value: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    """Every ``{step: NAME}`` model reference inside a validated config, with its field path."""
    if isinstance(value, StepModel):
        return [(path, value.step)]
    if isinstance(value, BaseModel):
        return [
            ref
            for name in type(value).model_fields
            for ref in _model_refs(getattr(value, name), (*path, name))
        ]
    if isinstance(value, dict):
        return [ref for k, v in value.items() for ref in _model_refs(v, (*path, str(k)))]
    if isinstance(value, list | tuple):
        return [ref for i, v in enumerate(value) for ref in _model_refs(v, (*path, str(i)))]
    return []


def _validate(
    model: type[M],
    data: dict[str, Any],
    where: Path_,
    located: _Located,
    help_command: str | None,
) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(tuple(str(p) for p in e["loc"]), e) for e in exc.errors()]
        suggested: set[tuple[str, ...]] = set()  # missing fields an unknown one was meant to be
        problems: list[tuple[tuple[str, ...], str]] = []
        for loc, error in errors:
            if error["type"] != "extra_forbidden":
                continue
            holder, given = _holder_of(model, data, loc[:-1])
            allowed = [f for f in holder.model_fields if f not in given] if holder else []
            close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.5)
            suggested.update((*loc[:-1], c) for c in close)
            message = f"unknown field{did_you_mean(loc[-1], allowed)}"
            if help_command:
                message += f"; `{help_command}` lists the fields"
            problems.append((loc, message))
        for loc, error in errors:
            # "path: Field required" says nothing more than "pth: did you mean 'path'?"
            if error["type"] == "missing" and loc in suggested:
                continue
            if error["type"] != "extra_forbidden":
                problems.append((loc, error["msg"]))
        for loc, message in sorted(problems, key=lambda p: located.line((*where, *p[0])) or 0):
            located.problem((*where, *loc), message)
        return None


def _holder_of(
    model: type[BaseModel], data: Any, loc: tuple[str, ...]
) -> tuple[type[BaseModel] | None, dict[str, Any]]:
    """The config model that holds the field at ``loc`` (a nested block's own model, not the
    step's), and the keys given for it, so a typo is matched against the right field names."""
    current: type[BaseModel] | None = model
    given: Any = data
    parts = list(loc)
    while parts and current is not None:
        name = parts.pop(0)
        field = current.model_fields.get(name)
        if field is None:
            return None, {}
        given = given.get(name) if isinstance(given, dict) else None
        candidates = _models_in(field.annotation)
        if parts and _is_container(field.annotation):  # a list index or a dict key
            key = parts.pop(0)
            if isinstance(given, list):
                given = given[int(key)] if key.isdigit() and int(key) < len(given) else None
            else:
                given = given.get(key) if isinstance(given, dict) else None
        named = [c for c in candidates if parts and parts[0] == c.__name__]
        if named:  # pydantic names the union member it tried
            parts.pop(0)
            candidates = named
        current = candidates[0] if len(candidates) == 1 else None
    return current, given if isinstance(given, dict) else {}


def _is_container(annotation: Any) -> bool:
    if get_origin(annotation) in (list, tuple, set, dict):
        return True
    return any(_is_container(arg) for arg in get_args(annotation) if arg is not type(None))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def preflight(spec: Spec) -> None:
    """Ask every step's plugin for problems it can see before any work (``Plugin.check``), and
    raise them all at once as a :class:`SpecError` pointing at each step."""
    from .interfaces import PluginContext

    problems: list[SpecProblem] = []
    for step in spec.steps.values():
        context = PluginContext(
            step_id=step.id, base_dir=spec.base_dir, work_dir=spec.base_dir / ".ecap" / "work"
        )
        plugin = step.plugin.cls(step.config, context)
        for message in plugin.check():
            problems.append(
                SpecProblem(str(spec.path), step.line, f"steps.{step.id}.with", message)
            )
    if problems:
        raise SpecError(problems)
