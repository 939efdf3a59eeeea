"""Cache keys: versioned hashes of canonical JSON, over semantic fields only.

A key changes when the plugin, its version, the model, the semantic config or the input records
change. It never changes with transport fields (concurrency, retries, timeouts, batch size),
decision fields (thresholds) or secrets, so tuning throughput or rotating a key recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from .interfaces import DECISION, TRANSPORT
from .secrets import REDACTED, SECRET_NAME, scrub

KEY_VERSION = "ecap1"


#: One encoder for every key: ``json.dumps`` with these options builds a new encoder per call,
#: a third of the time of encoding a cache key's parts.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def digest(*parts: Any) -> str:
    """``ecap1:<sha256>`` over the canonical JSON of ``parts``."""
    return f"{KEY_VERSION}:" + hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def _role(model: type[BaseModel], field: str) -> str | None:
    extra = model.model_fields[field].json_schema_extra
    return extra.get("ecap_role") if isinstance(extra, dict) else None  # type: ignore[return-value]


def semantic_config(config: BaseModel, exclude_roles: Iterable[str] = (TRANSPORT, DECISION)) -> Any:
    """The config as plain data, minus transport/decision fields and secrets, recursively."""
    skip = set(exclude_roles)
    out: dict[str, Any] = {}
    for name in type(config).model_fields:
        if _role(type(config), name) in skip or SECRET_NAME.search(name):
            continue
        value = getattr(config, name)
        if isinstance(value, SecretStr):
            continue
        out[name] = semantic_config(value, skip) if isinstance(value, BaseModel) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return semantic_config(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def redact(data: Any, secret_paths: set[tuple[str, ...]], path: tuple[str, ...] = ()) -> Any:
    """A copy of ``data`` safe to store: values under secret-looking keys, and values that were
    interpolated from the environment (``secret_paths``), become ``***``."""
    if path in secret_paths:
        return REDACTED
    if isinstance(data, dict):
        return {
            k: REDACTED
            if SECRET_NAME.search(str(k)) and v not in (None, "")
            else redact(v, secret_paths, (*path, str(k)))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v, secret_paths, (*path, str(i))) for i, v in enumerate(data)]
    return data


def redact_text(text: str) -> str:
    """Spec text safe to store: a literal value under a secret-looking key becomes ``***``, and
    every registered secret (:mod:`ecap.secrets`) is scrubbed wherever else it appears.

    The text is parsed, and each secret value is cut out at the position the parser reports, so
    every YAML spelling is covered: plain, quoted, on the next line, folded (``>``) and literal
    (``|``) block scalars, flow mappings, nested mappings, anchors. ``${env:...}`` references are
    kept: they name the variable, not its value. Text that does not parse is not stored at all,
    since where its secrets are cannot be known.
    """
    import yaml

    try:
        documents = list(yaml.compose_all(text))
    except yaml.YAMLError:
        return f"{REDACTED} (the spec text is not stored: it is not valid YAML)\n"
    spans: set[tuple[int, int]] = set()
    for document in documents:
        _secret_spans(document, spans, secret=False)
    out = text
    for start, end in sorted(spans, reverse=True):
        value = out[start:end]
        trailing = value[len(value.rstrip()) :]  # a block scalar's span ends with its newline
        out = out[:start] + REDACTED + trailing + out[end:]
    return scrub(out)


def _secret_spans(node: Any, spans: set[tuple[int, int]], *, secret: bool) -> None:
    """Collect the text spans of scalar values under secret-looking keys (``secret``: this node
    is under one), skipping ``${env:...}`` references and empty values."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        value = str(node.value)
        if secret and value.strip() and "${env:" not in value:
            spans.add((node.start_mark.index, node.end_mark.index))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            named = isinstance(key, yaml.ScalarNode) and SECRET_NAME.search(str(key.value))
            _secret_spans(value, spans, secret=secret or bool(named))
    elif isinstance(node, yaml.SequenceNode):
        for value in node.value:
            _secret_spans(value, spans, secret=secret)
