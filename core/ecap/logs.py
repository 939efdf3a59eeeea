"""Structured logs: every event is a name plus fields. Human-readable by default; one JSON object
per line with ``ECAP_LOG_FORMAT=json`` (or ``ecap --log-json``), for log shippers.

Every line is scrubbed of the secrets the process knows (:mod:`ecap.secrets`) as it is written, so
a key inside a field, a message or a server's error body never reaches a log."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from .secrets import scrub

LOGGER = logging.getLogger("ecap")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(payload, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = f"{record.levelname.lower()}: {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def configure(json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Send ecap's logs to stderr, as text or as JSON lines."""
    if json_lines is None:
        json_lines = os.environ.get("ECAP_LOG_FORMAT", "").lower() == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``name`` with structured ``fields``."""
    LOGGER.log(level, name, extra={"fields": fields})
