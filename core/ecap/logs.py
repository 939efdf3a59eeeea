"""Structured logs: every event is a name plus fields. Human-readable by default; one JSON object
per line with ``ECAP_LOG_FORMAT=json`` (or ``ecap --log-json``), for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

LOGGER = logging.getLogger("ecap")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(payload, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return f"{record.levelname.lower()}: {record.getMessage()} {fields}".rstrip()


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
