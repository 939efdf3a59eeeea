"""Secret values a process knows, and scrubbing them out of anything stored or printed.

A key can reach the store or a terminal by many roads: typed into a spec, read from the
environment by an SDK, echoed back by a server in an error body, quoted in a traceback. Redacting
by field name catches only the first. So every secret value a run knows is registered here once
(:func:`register_secret`, :func:`register_config`, :func:`register_environment`) and
:func:`scrub` replaces each of them, wherever it appears, before text is stored or printed.

The registry is per process (a run, a CLI command). Values shorter than :data:`MIN_LENGTH` are
not registered: scrubbing "abc" out of every message would destroy the messages and protect
nothing a guess would not find.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from pydantic import SecretStr

#: What replaces a secret.
REDACTED = "***"
#: A config or spec key whose value is a secret (``api_key``, ``token``, ``db_password``...).
SECRET_NAME = re.compile(
    r"(key|token|secret|passw(or)?d|passphrase|credentials?|authorization)$", re.IGNORECASE
)
#: Shorter values are not treated as secrets (see the module's docstring).
MIN_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _is_secret_str(value: Any) -> bool:
    """Whether ``value`` is a pydantic ``SecretStr``. Asked of pydantic only once something has
    imported it (no value can be one before): the CLI registers the environment's secrets at
    start-up, and importing pydantic for that would double the time ``ecap --help`` takes."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.SecretStr)


def _is_model(value: Any) -> bool:
    """Whether ``value`` is a pydantic model (asked as :func:`_is_secret_str` asks)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def register_secret(value: str | SecretStr | None) -> None:
    """Remember ``value`` so that :func:`scrub` removes it (and its URL-encoded form)."""
    global _pattern
    if _is_secret_str(value):
        value = value.get_secret_value()  # type: ignore[union-attr]
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_LENGTH:
        return
    forms = {value, quote(value, safe="")}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # Longest first, so that a secret containing another is removed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def register_config(data: Any) -> None:
    """Register every secret in a config: ``SecretStr`` values anywhere, and string values under
    secret-looking names, in a pydantic model or plain data (a spec's parsed ``with:`` block)."""
    if _is_secret_str(data):
        register_secret(data)
    elif _is_model(data):
        for name in type(data).model_fields:
            value = getattr(data, name)
            if SECRET_NAME.search(name):
                _register_all(value)
            register_config(value)
    elif isinstance(data, Mapping):
        for name, value in data.items():
            if SECRET_NAME.search(str(name)):
                _register_all(value)
            register_config(value)
    elif isinstance(data, list | tuple):
        for value in data:
            register_config(value)


def _register_all(value: Any) -> None:
    """Every string under a secret's name, however nested (``token: {value: ...}``)."""
    if isinstance(value, str) or _is_secret_str(value):
        register_secret(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _register_all(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _register_all(item)


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Register the values of environment variables with secret-looking names
    (``OPENAI_API_KEY``, ``HF_TOKEN``, ``PGPASSWORD``...): SDKs read keys from there."""
    for name, value in (os.environ if environ is None else environ).items():
        if SECRET_NAME.search(name):
            register_secret(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, text)


def scrub_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` (a call-log response, a record's meta) with every registered
    secret scrubbed from its strings, keys included."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, Mapping):
        return {scrub_data(k): scrub_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [scrub_data(v) for v in data]
    return data


def registered() -> frozenset[str]:
    """The registered values (for tests and for a process that hands them to a child)."""
    with _lock:
        return frozenset(_secrets)


def forget_secrets() -> None:
    """Forget every registered value: one test's secrets must not shape the next one's output."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
