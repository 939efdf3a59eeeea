"""Cache keys: versioned hashes of canonical JSON, over semantic fields only.

A key changes when the plugin, its version, the model, the semantic config or the input records
change. It never changes with transport fields (concurrency, retries, timeouts, batch size),
decision fields (thresholds) or secrets, so tuning throughput or rotating a key recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from .interfaces import DECISION, TRANSPORT

KEY_VERSION = "ecap1"
SECRET_NAME = re.compile(r"(key|token|secret|password)$", re.IGNORECASE)
REDACTED = "***"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


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


# ``key: value`` in block or flow YAML; the value stops at a comment, a comma or a bracket.
_YAML_PAIR = re.compile(
    r"(?P<key>[\w.-]+)(?P<sep>[\"']?\s*:[ \t]+)"
    r"(?P<value>\$\{[^}\n]*\}|\"[^\"\n]*\"|'[^'\n]*'|[^\s,{}\[\]#][^,{}\[\]#\n]*)"
)


def redact_text(text: str) -> str:
    """Spec text safe to store: a literal value under a secret-looking key becomes ``***``.

    ``${env:...}`` references are kept: they name the variable, not its value. Someone who typed a
    key into a spec still gets a working run; the store never holds the key.
    """

    def replace(match: re.Match[str]) -> str:
        value = match["value"].strip()
        if not SECRET_NAME.search(match["key"]) or "${env:" in value or value in ('""', "''"):
            return match[0]
        return f"{match['key']}{match['sep']}{REDACTED}"

    return _YAML_PAIR.sub(replace, text)
