"""Models as the core knows them: naming the weights that answer, and references to models.

**Identity.** A local folder is named by the sha256 of its files, a hub id by its revision.

A relative ``model`` is a folder relative to the spec's folder when one is there, else a hub id;
a path that is plainly a path (absolute, ``./``, ``../``, ``~``) and does not exist is an error,
never silently looked up elsewhere (the working directory) or on the hub.

Only the files that define what the model computes are hashed (:data:`HASHED`: configs, top-level
weights, tokenizer, processor, chat template, generation config, remote code): a training run's
optimizer states, ``checkpoint-*/`` folders and logs change all the time without changing the
weights. Hashing a 17 GB checkpoint takes a minute, and the step's cache key needs the hash on
every plan, so each file's hash is kept on disk (``$ECAP_CACHE_DIR``, else ``~/.cache/ecap``)
under its path, size and modification time: a file is read again only when it changes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import EcapError


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights answer: ``name`` (hub id, local path or API model), its ``revision`` (a
    commit, when known) and, for local folders, the sha256 of their files."""

    name: str
    revision: str | None = None
    content_hash: str | None = None

    def label(self) -> str:
        """``name@revision`` or ``name#sha256:...``: what an instruction's ``author`` says."""
        label = self.name
        if self.revision:
            label += f"@{self.revision}"
        if self.content_hash:
            label += f"#{self.content_hash}"
        return label

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "revision": self.revision, "content_hash": self.content_hash}


#: Top-level files that define the weights and how inputs are processed.
HASHED = (
    "config*.json",
    "adapter_config*.json",
    "generation_config*.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "*.pt",
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map*",
    "added_tokens*",
    "*.tiktoken",
    "processor*",
    "preprocessor*",
    "video_preprocessor*",
    "chat_template*",
    "*.py",
)
#: Training leftovers that match :data:`HASHED` but hold no weights.
NOT_WEIGHTS = ("optimizer*", "scheduler*", "rng_state*", "training_args*", "trainer_state*")


def cache_dir() -> Path:
    configured = os.environ.get("ECAP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "ecap"


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or Path(model).is_absolute()


def local_folder(model: str, base_dir: Path | None) -> Path | None:
    """``model`` as an existing local folder, relative paths against ``base_dir`` (the spec's
    folder) only; ``None`` for a hub id. A path that does not exist is an :class:`EcapError`."""
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        return path.resolve()
    if looks_like_path(model):
        where = "" if Path(model).is_absolute() else f" (relative to the spec's folder {base_dir})"
        raise EcapError(f"model folder {model!r} does not exist{where}")
    return None


def describe_model(model: str, revision: str | None, base_dir: Path | None) -> ModelIdentity:
    """A local folder with its content hash; anything else (hub id, API model) as written."""
    folder = local_folder(model, base_dir)
    if folder is None:
        return ModelIdentity(name=model, revision=revision)
    return ModelIdentity(name=str(folder), revision=revision, content_hash=folder_hash(folder))


def folder_hash(folder: Path) -> str:
    """``sha256:<hex>`` over the :data:`HASHED` files' names and sha256s, in sorted order."""
    entries = []
    for path in sorted(_files(folder)):
        entries.append(f"{path.relative_to(folder).as_posix()}\0{file_hash(path)}")
    return "sha256:" + hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _files(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.iterdir()
        if path.is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in HASHED)
        and not any(fnmatch.fnmatch(path.name, pattern) for pattern in NOT_WEIGHTS)
    ]


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


class StepModel(BaseModel):
    """``{step: NAME}`` in a spec: the model that the ``train`` step NAME produced.

    The spec makes NAME an upstream dependency of the step that names it, and the runner resolves
    the reference to the trained model's folder and record before the plugin runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str = Field(description="id of the train step whose model to use")


#: What any plugin field naming a model accepts: a hub id, a local path, or ``{step: NAME}``.
ModelRef = str | StepModel


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: what to load and what to record.

    ``path`` is what ``from_pretrained`` (or a server) gets: the hub id as written, an absolute
    local folder, or the folder a train step wrote. ``record_id`` is the id of the stored
    :class:`~ecap.records.Model` when the reference named a train step, so that everything the model
    writes can carry a lineage edge to it.
    """

    path: str
    identity: ModelIdentity
    record_id: str | None = None
    #: For a trained model: the base it was fine-tuned from and whether ``path`` holds a LoRA
    #: adapter rather than full weights (then ``base`` is what the adapter loads on).
    base: str | None = None
    adapter: bool = False


def resolve_model(
    ref: ModelRef,
    base_dir: Path | None,
    revision: str | None = None,
    trained: Any = None,
) -> ResolvedModel:
    """``ref`` made concrete. ``trained(step_id)`` returns the Model record a train step made
    (the runner passes it); a hub id is left for ``from_pretrained`` to find."""
    if isinstance(ref, StepModel):
        if trained is None:
            raise EcapError(f"model {{step: {ref.step}}} can only be resolved inside a run")
        record = trained(ref.step)
        meta = record.meta or {}
        identity = ModelIdentity(
            name=record.uri, revision=record.revision, content_hash=meta.get("content_hash")
        )
        return ResolvedModel(
            path=record.uri,
            identity=identity,
            record_id=record.id,
            base=meta.get("base_path"),
            adapter=bool(meta.get("adapter")),
        )
    identity = describe_model(ref, revision, base_dir)
    return ResolvedModel(path=identity.name, identity=identity)


__all__ = [
    "HASHED",
    "ModelIdentity",
    "ModelRef",
    "ResolvedModel",
    "StepModel",
    "describe_model",
    "file_hash",
    "folder_hash",
    "local_folder",
    "resolve_model",
]
