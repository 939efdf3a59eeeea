"""The SQL provenance store: records, runs, cache and lineage (SQLite by default, PostgreSQL)."""

from .store import Store, default_store_url

__all__ = ["Store", "default_store_url"]
