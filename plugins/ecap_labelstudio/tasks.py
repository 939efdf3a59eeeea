"""What ecap sends to Label Studio: image locations (checked against the configured roots) and task
payloads whose data carries the ids that bring the answers back to the right records.

Every task's data holds ``ecap_task`` (its kind), ``pair_id`` and ``instruction_id`` (refine,
evaluate) or ``candidate_ids`` (prefer). Label Studio keeps extra data fields and exports them in
both JSON and JSON_MIN, so they are the join keys for pulling, and the lookup keys that make
pushing idempotent.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ecap.defects import effective, is_valid
from ecap.records import Item, Pair

from .annotations import NONE_OPTION, TIE_OPTION, option_values
from .configs import TaskKind

LOCAL_FILES = "/data/local-files/"
REMOTE = ("http://", "https://")


class UnusableItem(ValueError):
    """An item no task can be made for; reported for that item alone."""


class ImagePathError(UnusableItem):
    """An image that may not be shown: outside the configured root, or not a plain path."""


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths, ``..`` and links that lead out of ``root``."""
    if "\x00" in relative:
        raise ImagePathError(f"image path {relative!r} contains a NUL byte")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if not relative or posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ImagePathError(f"image path '{relative}' is absolute; it must be relative to {root}")
    if ".." in posix.parts or ".." in windows.parts:
        raise ImagePathError(f"image path '{relative}' contains '..'")
    path = (root / posix).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ImagePathError(f"image path '{relative}' leads outside {root}")
    return path


@dataclass(frozen=True)
class ImageLocations:
    """How tasks refer to images, and how references in exported tasks map back to files.

    - ``local-files``: ``/data/local-files/?d=<path relative to document_root>``; the server
      serves files of ``images_root`` (a folder inside its document root) to the project.
    - ``url``: ``image_url`` with ``{path}`` replaced by the path relative to ``images_root``.

    Images already given by http(s) URL are passed through unchanged.
    """

    mode: Literal["local-files", "url"]
    images_root: Path | None
    document_root: Path | None
    image_url: str | None

    def url_for(self, uri: str) -> str:
        if uri.startswith(REMOTE):
            return uri
        try:
            path = Path(uri.removeprefix("file://")).resolve()
        except (ValueError, OSError) as exc:  # a NUL byte, a loop of links
            raise ImagePathError(f"image {uri!r} is not a usable path: {exc}") from exc
        root = self._root()
        if not path.is_relative_to(root):
            raise ImagePathError(f"image {path} is outside images_root {root}")
        if self.mode == "url":
            assert self.image_url is not None
            return self.image_url.replace("{path}", quote(path.relative_to(root).as_posix()))
        assert self.document_root is not None
        relative = path.relative_to(self.document_root.resolve())
        return LOCAL_FILES + "?d=" + quote(relative.as_posix())

    def path_for(self, value: Any) -> Path:
        """The local file an exported task's image reference points at, always inside
        ``images_root`` (when set): a local-files URL names a path below the document root, but
        only the images folder may be read."""
        if not isinstance(value, str) or not value:
            raise ImagePathError(f"image reference {value!r} is not a path or URL")
        try:
            return self._path_for(value)
        except ImagePathError:
            raise
        except (ValueError, OSError) as exc:  # a NUL byte, a loop of links
            raise ImagePathError(f"image reference {value!r} is not a usable path: {exc}") from exc

    def _path_for(self, value: str) -> Path:
        if value.startswith(LOCAL_FILES):
            if self.document_root is None:
                raise ImagePathError(f"{value}: set document_root to read local-files images")
            found = parse_qs(urlsplit(value).query).get("d", [""])[0]
            path = safe_join(self.document_root, found)
            if self.images_root is not None and not path.is_relative_to(self._root()):
                raise ImagePathError(f"image {path} is outside images_root {self._root()}")
            return path
        prefix = self.image_url.split("{path}")[0] if self.image_url else None
        if prefix and value.startswith(prefix):
            return safe_join(self._root(), unquote(value[len(prefix) :]))
        if "://" in value or value.startswith("/data/"):
            raise ImagePathError(
                f"cannot read image {value}: only local-files URLs, image_url URLs and paths "
                "under images_root can be imported"
            )
        return safe_join(self._root(), value)

    def _root(self) -> Path:
        root = self.images_root or self.document_root
        if root is None:
            raise ImagePathError("set images_root (the folder the images are in)")
        return root.resolve()


def check_roots(locations: ImageLocations) -> str | None:
    """A configuration problem with the roots, or ``None``. Label Studio refuses a storage equal
    to its document root, and only serves files below it."""
    if locations.mode == "url":  # the config checks image_url itself
        if locations.images_root is None:
            return "images: url needs images_root, the folder image_url serves"
        return None
    if locations.document_root is None:
        return (
            "images: local-files needs document_root (the server's "
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; or set that variable here too)"
        )
    if locations.images_root is None:
        return "images: local-files needs images_root, a folder inside document_root"
    images, document = locations.images_root.resolve(), locations.document_root.resolve()
    if images == document or not images.is_relative_to(document):
        return f"images_root {images} must be a folder inside document_root {document}"
    return None


def _images(pair: Pair, locations: ImageLocations) -> dict[str, str]:
    return {
        "source_image": locations.url_for(pair.source.uri),
        "target_image": locations.url_for(pair.target.uri),
    }


def instruction_task(kind: TaskKind, item: Item, locations: ImageLocations) -> dict[str, Any]:
    """A refine or evaluate task for one (pair, instruction), with the model's answer as a
    prediction: its text in the correction box, or its defect codes on the checklist."""
    instruction = item.instruction
    assert instruction is not None
    data = {
        **_images(item.pair, locations),
        "instruction": instruction.text,
        "ecap_task": kind,
        "pair_id": item.pair.id,
        "instruction_id": instruction.id,
    }
    task: dict[str, Any] = {"data": data}
    model_version = instruction.author or "ecap"
    if kind == "refine":
        result = [_text_result("refined", "instruction", instruction.text)]
        task["predictions"] = [{"model_version": model_version, "result": result}]
    elif item.verdict and item.verdict.labels and all(map(is_valid, item.verdict.labels)):
        codes = effective(item.verdict.labels)
        level = codes[0].split(":")[0].lower()
        result = [
            _choice_result("verdict", "instruction", ["defective"]),
            _choice_result(level, "instruction", codes),
        ]
        task["predictions"] = [{"model_version": item.verdict.judge, "result": result}]
    return task


def prefer_data(
    pair: Pair, candidates: Sequence[tuple[str, str]], locations: ImageLocations
) -> dict[str, Any]:
    """A prefer task's data: the candidates, (instruction id, text) in order, as the options of
    the ``best`` choice."""
    letters = option_values(len(candidates))
    options = [
        {"value": letter, "html": f"<b>{letter}</b>: {html.escape(text)}"}
        for letter, (_, text) in zip(letters, candidates, strict=True)
    ]
    if len(candidates) > 1:
        options.append({"value": TIE_OPTION, "html": "They are equally good"})
    options.append({"value": NONE_OPTION, "html": "None is right: I write the instruction below"})
    return {
        **_images(pair, locations),
        "options": options,
        "candidates": [text for _, text in candidates],
        "ecap_task": "prefer",
        "pair_id": pair.id,
        "candidate_ids": [instruction_id for instruction_id, _ in candidates],
    }


def _text_result(name: str, to_name: str, text: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": to_name, "type": "textarea", "value": {"text": [text]}}


def _choice_result(name: str, to_name: str, choices: list[str]) -> dict[str, Any]:
    return {"from_name": name, "to_name": to_name, "type": "choices", "value": {"choices": choices}}


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


__all__ = [
    "ImageLocations",
    "ImagePathError",
    "UnusableItem",
    "check_roots",
    "env_path",
    "instruction_task",
    "prefer_data",
    "safe_join",
]
