"""Naming the weights that answer: a local folder by the sha256 of its files, a hub id by revision.

Hashing a 17 GB checkpoint takes a minute, and the step's cache key needs the hash on every plan,
so each file's hash is kept on disk (``$ECAP_CACHE_DIR``, else ``~/.cache/ecap``) under its path,
size and modification time: a file is read again only when it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from .base import ModelIdentity

#: Folders inside a checkpoint that never hold weights or configuration.
SKIPPED_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}


def cache_dir() -> Path:
    configured = os.environ.get("ECAP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "ecap"


def local_folder(model: str, base_dir: Path | None) -> Path | None:
    """``model`` as an existing local folder (relative paths against ``base_dir`` first)."""
    candidates = [Path(model).expanduser()]
    if base_dir is not None and not Path(model).is_absolute():
        candidates.insert(0, base_dir / model)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def describe_model(model: str, revision: str | None, base_dir: Path | None) -> ModelIdentity:
    """A local folder with its content hash; anything else (hub id, API model) as written."""
    folder = local_folder(model, base_dir)
    if folder is None:
        return ModelIdentity(name=model, revision=revision)
    return ModelIdentity(name=str(folder), revision=revision, content_hash=folder_hash(folder))


def folder_hash(folder: Path) -> str:
    """``sha256:<hex>`` over every file's relative path and sha256, in sorted order."""
    entries = []
    for path in sorted(_files(folder)):
        entries.append(f"{path.relative_to(folder).as_posix()}\0{file_hash(path)}")
    return "sha256:" + hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        found.extend(Path(root) / name for name in files if not name.startswith("."))
    return found


def file_hash(path: Path) -> str:
    """The file's sha256, from the on-disk cache while its size and mtime are unchanged."""
    stat = path.stat()
    return _cached_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _cached_hash(path: str, size: int, mtime_ns: int) -> str:
    entry = cache_dir() / "sha256" / (hashlib.sha1(path.encode()).hexdigest() + ".json")
    try:
        known = json.loads(entry.read_text())
        if known["size"] == size and known["mtime_ns"] == mtime_ns:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=entry.parent, delete=False) as out:
            json.dump({"path": path, "size": size, "mtime_ns": mtime_ns, "sha256": value}, out)
        os.replace(out.name, entry)
    except OSError:  # a read-only home only costs re-hashing next time
        pass
    return value


__all__ = ["describe_model", "file_hash", "folder_hash", "local_folder"]
