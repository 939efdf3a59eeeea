"""The SQL provenance store: records, runs, cache and lineage (SQLite by default, PostgreSQL)."""

from .store import Store

__all__ = ["Store"]
