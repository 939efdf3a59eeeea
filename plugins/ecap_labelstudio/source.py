"""The ``label-studio`` plugin: human refinement, preference correction and P0/P1/P2 grading.

As an ``annotate:`` step it pushes one task per upstream item (``prefer``: one task per pair, with
every candidate instruction of that pair) into a Label Studio project, and pulls what people
finished; the step waits until every task is finished. As a ``source:`` step it imports the
finished tasks of an export file (or of a project on a server) with no pushing at all, for
annotations made before ecap.

Pushing is idempotent: before importing, the plugin reads the project's tasks and reuses any task
whose data already names the same pair and instruction, so a re-run, or a run killed between the
import and the store's commit, never duplicates a task. Pulling reads the project's JSON export
(or ``export_file``) once per step and matches tasks to items by the same ids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from ecap.calls import request_hash
from ecap.errors import EcapError
from ecap.hashing import digest
from ecap.interfaces import (
    Annotator,
    Plugin,
    PluginConfig,
    PluginContext,
    Source,
    SourceRow,
    transport_field,
)
from ecap.records import ImageRef, Instruction, Item, Pair, SampleError

from .annotations import (
    EPOCH,
    BadRow,
    ExportedTask,
    Rejected,
    Resolution,
    parse_time,
    read_export,
    resolve,
)
from .client import LabelStudioClient
from .configs import TaskKind, shipped
from .results import RecordBuilder, stable_id
from .tasks import (
    ImageLocations,
    ImagePathError,
    UnusableItem,
    check_roots,
    env_path,
    instruction_task,
    prefer_data,
)

#: Task data fields a project made outside ecap may call differently (see ``fields``).
DATA_FIELDS = ("source_image", "target_image", "instruction", "candidates")
#: The data fields holding a task's two images.
IMAGE_FIELDS = DATA_FIELDS[:2]
#: The external task id of an item no task can be made for. The reason is not kept in the id (it
#: may be long, and ids are short columns): pulling the item finds it again and fails the sample.
#: Not "rejected", which names the losing side of a preference.
NO_TASK = "no-task"


class LabelStudioConfig(PluginConfig):
    task: TaskKind = Field(
        "refine",
        description="refine: correct instructions; prefer: choose or rewrite among candidates "
        "(preferences); evaluate: grade with the P0/P1/P2 checklist (human verdicts)",
    )
    url: str | None = transport_field(
        None,
        description="Label Studio server, e.g. http://127.0.0.1:8080 (default: $LABEL_STUDIO_URL); "
        "not part of the cache key, so the same server under another address keeps its tasks",
    )
    api_key: SecretStr | None = Field(
        None,
        description="API token: legacy token or personal access token "
        "(default: $LABEL_STUDIO_API_KEY); never stored",
    )
    project: str | None = Field(
        None,
        description="project title (created with the task's labelling config when missing) or "
        "numeric id; default: 'ecap <step id>'",
    )
    export_file: str | None = transport_field(
        None,
        description="read annotations from this Label Studio export (JSON or JSON_MIN, relative "
        "to the spec) instead of the server; a source step needs it or url",
    )
    images: Literal["local-files", "url"] = Field(
        "local-files",
        description="local-files: the server serves images_root (a folder in its document root); "
        "url: tasks link to image_url",
    )
    document_root: str | None = Field(
        None,
        description="the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT as a path here "
        "(default: that variable); exported local-files paths resolve against it",
    )
    images_root: str | None = Field(
        None,
        description="folder every image must be inside (paths outside it, absolute paths and "
        "'..' are refused); with local-files, a subfolder of document_root",
    )
    image_url: str | None = Field(
        None, description="with images: url, a URL template; {path} is the path in images_root"
    )
    resolution: Resolution = Field(
        "latest",
        description="several annotators on one task: latest (the last saved counts), majority "
        "(more than half must agree), agree (all must agree) or all (every one is kept as its "
        "own record); a ground-truth annotation always wins",
    )
    min_annotations: int = Field(
        1, ge=1, description="annotations (submitted or skipped) a task needs to count as finished"
    )
    instruction_origin: Literal["model", "human", "reference"] = Field(
        "model", description="source steps: the origin of the instructions the tasks showed"
    )
    output_shown: bool = Field(
        False,
        description="source steps: also output the instructions the tasks showed as items; by "
        "default they are stored for lineage only and the outputs are the human results",
    )
    controls: dict[str, str] = Field(
        default_factory=dict,
        description="ecap's control name -> its name in your project, for projects whose "
        "labelling config names them differently",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description=f"ecap's task data field ({', '.join(DATA_FIELDS)}) -> its name in your tasks",
    )
    annotators: dict[int, str] = Field(
        default_factory=dict,
        description="user id -> name, for export files (which name annotators by id only); "
        "through the API, names come from the server",
    )
    timeout: float = transport_field(60.0, gt=0, description="seconds per HTTP request")

    @model_validator(mode="after")
    def _check(self) -> LabelStudioConfig:
        known = set(shipped(self.task).controls)
        unknown = sorted(set(self.controls) - known)
        if unknown:
            raise ValueError(
                f"controls: {', '.join(unknown)} not a control of {self.task} tasks "
                f"(they are: {', '.join(sorted(known))})"
            )
        unknown = sorted(set(self.fields) - set(DATA_FIELDS))
        if unknown:
            raise ValueError(f"fields: {', '.join(unknown)} not one of {', '.join(DATA_FIELDS)}")
        if self.images == "url" and (not self.image_url or "{path}" not in self.image_url):
            raise ValueError("images: url needs image_url, a URL template containing {path}")
        return self


class Snapshot:
    """The tasks of one project (or export file), indexed by the ecap ids in their data."""

    def __init__(self, kind: TaskKind, entries: Sequence[ExportedTask | BadRow]) -> None:
        self.kind = kind
        self.by_instruction: dict[tuple[str, str], ExportedTask] = {}
        self.by_pair: dict[str, list[ExportedTask]] = {}
        self.bad = [e for e in entries if isinstance(e, BadRow)]
        self.foreign = 0  # tasks that ecap did not make for this kind
        for entry in entries:
            if isinstance(entry, ExportedTask):
                self.add(entry)

    def add(self, task: ExportedTask) -> None:
        data = task.data
        if data.get("ecap_task") != self.kind or not isinstance(data.get("pair_id"), str):
            self.foreign += 1
            return
        ids = data.get("candidate_ids") if self.kind == "prefer" else [data.get("instruction_id")]
        pair_id = data["pair_id"]
        for instruction_id in ids if isinstance(ids, list) else []:
            self.by_instruction.setdefault((pair_id, str(instruction_id)), task)
        self.by_pair.setdefault(pair_id, []).append(task)

    def replace(self, old: ExportedTask, data: dict[str, Any]) -> None:
        new = ExportedTask(old.id, data, old.created_at, old.annotations)
        self.by_pair[old.data["pair_id"]].remove(old)
        for key, task in self.by_instruction.items():
            if task is old:
                self.by_instruction[key] = new
        self.add(new)

    def find(self, item: Item) -> ExportedTask | None:
        if item.instruction is None:
            return None
        return self.by_instruction.get((item.pair.id, item.instruction.id))

    def open_task(self, pair_id: str) -> ExportedTask | None:
        """A prefer task of this pair that nobody has touched yet: new candidates may join it."""
        return next((t for t in self.by_pair.get(pair_id, []) if not t.annotations), None)


class LabelStudioProject(Plugin):
    """One Label Studio project (or its export file) for refine, prefer and evaluate tasks:
    pushing items as tasks and pulling what people finished (:class:`LabelStudioAnnotator`), and
    importing finished tasks as records (:class:`LabelStudioSource`) share all of it."""

    Config = LabelStudioConfig
    config: LabelStudioConfig

    def __init__(self, config: LabelStudioConfig, context: PluginContext) -> None:
        super().__init__(config, context)
        self.labels = shipped(config.task)
        self._client: LabelStudioClient | None = None
        self._project: int | None = None
        self._server: Snapshot | None = None
        self._file: Snapshot | None = None
        self._known: dict[str, Instruction] = {}  # instruction records seen, for prefer outputs
        self._audited: set[str] = set()
        self._storage_ready = False

    # -- configuration ------------------------------------------------------------------------

    def _path(self, value: str | None) -> Path | None:
        return (self.context.base_dir / value).resolve() if value else None

    @cached_property
    def locations(self) -> ImageLocations:
        document_root = self._path(self.config.document_root) or env_path(
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        )
        return ImageLocations(
            mode=self.config.images,
            images_root=self._path(self.config.images_root),
            document_root=document_root,
            image_url=self.config.image_url,
        )

    @cached_property
    def builder(self) -> RecordBuilder:
        return RecordBuilder(self.config.task, self.config.resolution, self._origin())

    def _origin(self) -> str:
        if self.config.export_file:
            return f"file {Path(self.config.export_file).name}"
        return f"project {self.project_id()}"

    def _field(self, name: str) -> str:
        return self.config.fields.get(name, name)

    def client(self) -> LabelStudioClient:
        if self._client is None:
            url = self.config.url or os.environ.get("LABEL_STUDIO_URL")
            if not url:
                raise EcapError(
                    "label-studio: no server; set url (or $LABEL_STUDIO_URL), or export_file to "
                    "read an export instead"
                )
            key = self.config.api_key
            token = key.get_secret_value() if key else os.environ.get("LABEL_STUDIO_API_KEY")
            if not token:
                raise EcapError(
                    f"label-studio: no API token for {url}; set api_key (or "
                    "$LABEL_STUDIO_API_KEY) to the token shown under Account & Settings"
                )
            self._client = LabelStudioClient(url, token, self.config.timeout)
        return self._client

    def project_id(self, create: bool = True) -> int:
        """The project's id: found by id or title, created with the shipped config if missing
        (unless ``create`` is false: a source step only reads)."""
        if self._project is None:
            client = self.client()
            name = self.config.project or f"ecap {self.context.step_id}"
            if name.isdigit():
                project = client.project(int(name))
            else:
                found = client.projects(name)
                if len(found) > 1:
                    ids = ", ".join(str(p["id"]) for p in found)
                    raise EcapError(
                        f"label-studio: {len(found)} projects are titled '{name}' (ids {ids}); "
                        "set project to one id"
                    )
                if not found and not create:
                    raise EcapError(f"label-studio: no project titled '{name}' at {client.url}")
                project = (
                    found[0]
                    if found
                    else client.create_project(
                        name,
                        self.labels.xml,
                        f"{self.config.task} tasks of ecap step '{self.context.step_id}'",
                        maximum_annotations=self.config.min_annotations,
                    )
                )
            self._check_project(project)
            self._project = int(project["id"])
        return self._project

    def _check_project(self, project: dict[str, Any]) -> None:
        """A reused project must have the controls ecap reads, with the right types."""
        parsed = project.get("parsed_label_config") or {}
        for control in self.labels.controls.values():
            name = self.config.controls.get(control.name, control.name)
            found = parsed.get(name, {}).get("type", "").lower()
            if found != control.type:
                raise EcapError(
                    f"label-studio: project '{project.get('title')}' (id {project.get('id')}) "
                    f"has no {control.type} control named '{name}', so it was not made for "
                    f"{self.config.task} tasks; choose another project, or map names with "
                    "`controls:`"
                )
        wanted, allowed = self.config.min_annotations, project.get("maximum_annotations", 1)
        if isinstance(allowed, int) and allowed < wanted:
            raise EcapError(
                f"label-studio: project '{project.get('title')}' (id {project.get('id')}) hands "
                f"each task to {allowed} annotator(s), so tasks never reach min_annotations "
                f"{wanted}; raise 'Annotations per task' (overlap) in its settings"
            )

    def _ensure_storage(self) -> None:
        """With local-files images, the project needs a local storage over images_root, or the
        server refuses to serve the files."""
        if self.config.images != "local-files" or self._storage_ready:
            return
        root = self.locations.images_root
        assert root is not None
        project = self.project_id()
        storages = self.client().local_storages(project)
        if not any(Path(s.get("path", "")).resolve() == root.resolve() for s in storages):
            self.client().create_local_storage(project, str(root.resolve()), "ecap images")
        self._storage_ready = True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- reading tasks --------------------------------------------------------------------------

    def _read(self, create: bool = True) -> list[ExportedTask | BadRow]:
        """The tasks of ``export_file`` if set, else of the project on the server."""
        return self._read_file() if self.config.export_file else self._read_server(create)

    def _names(self) -> dict[str, str]:
        return {theirs: ours for ours, theirs in self.config.controls.items()}

    def _read_file(self) -> list[ExportedTask | BadRow]:
        path = self._path(self.config.export_file)
        assert path is not None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EcapError(f"label-studio: cannot read export {path}: {exc}") from exc
        return read_export(payload, self.labels, names=self._names(), users=self.config.annotators)

    def _read_server(self, create: bool = True) -> list[ExportedTask | BadRow]:
        client = self.client()
        payload = client.export(self.project_id(create))
        return read_export(payload, self.labels, names=self._names(), users=client.users())

    def _server_tasks(self) -> Snapshot:
        """The project's tasks as the server has them: what pushing checks against."""
        if self._server is None:
            self._server = self._report(Snapshot(self.config.task, self._read_server()))
        return self._server

    def refresh(self) -> None:
        """Read the project from the server again on next use: the snapshot a step works from
        is taken once, and annotations submitted since (by a scripted annotator in this process)
        are not in it."""
        self._server = None

    def _pulled_tasks(self) -> Snapshot:
        if not self.config.export_file:
            return self._server_tasks()
        if self._file is None:
            self._file = self._report(Snapshot(self.config.task, self._read_file()))
        return self._file

    def _report(self, snapshot: Snapshot) -> Snapshot:
        """Say once per step what no item can claim: entries that are not tasks, and tasks that
        ecap did not make for this kind of step. Nothing else fails because of them."""
        where = self.config.export_file or "the project"
        for bad in snapshot.bad:
            self.context.logger.warning("label-studio: %s of %s: %s", bad.where, where, bad.message)
        if snapshot.bad or snapshot.foreign:
            self.context.logger.warning(
                "label-studio: %s holds %d entries that are not tasks and %d tasks not made by "
                "ecap for %s tasks; they match no item and are ignored",
                where,
                len(snapshot.bad),
                snapshot.foreign,
                self.config.task,
            )
        return snapshot

    # -- push -----------------------------------------------------------------------------------

    def push(self, batch: Sequence[Item]) -> list[str]:
        problem = check_roots(self.locations)
        if problem:
            raise EcapError(f"label-studio: {problem}")
        self._remember(batch)
        self._ensure_storage()
        tasks = self._server_tasks()
        ids: list[str] = [""] * len(batch)
        if self.config.task == "prefer":
            self._push_prefer(batch, ids, tasks)
        else:
            self._push_single(batch, ids, tasks)
        return ids

    def _remember(self, items: Sequence[Item]) -> None:
        self._known.update((i.instruction.id, i.instruction) for i in items if i.instruction)

    def _push_single(self, batch: Sequence[Item], ids: list[str], tasks: Snapshot) -> None:
        pending: dict[tuple[str, str], tuple[dict[str, Any], list[int]]] = {}
        for position, item in enumerate(batch):
            existing = tasks.find(item)
            if existing is not None:
                ids[position] = existing.id
                continue
            try:
                payload = self._single_task(item)
            except UnusableItem:
                ids[position] = NO_TASK  # pulling it fails the sample with the reason
                continue
            assert item.instruction is not None
            key = (item.pair.id, item.instruction.id)
            pending.setdefault(key, (payload, []))[1].append(position)
        self._import(list(pending.values()), ids, tasks)

    def _single_task(self, item: Item) -> dict[str, Any]:
        if item.instruction is None:
            raise UnusableItem("the item has no instruction to show")
        return instruction_task(self.config.task, item, self.locations)

    def _push_prefer(self, batch: Sequence[Item], ids: list[str], tasks: Snapshot) -> None:
        groups: dict[str, list[tuple[int, Item]]] = {}
        for position, item in enumerate(batch):
            groups.setdefault(item.pair.id, []).append((position, item))
        new: list[tuple[dict[str, Any], list[int]]] = []
        for pair_id, members in groups.items():
            fresh: dict[str, tuple[Instruction, list[int]]] = {}
            for position, item in members:
                existing = tasks.find(item)
                if existing is not None:
                    ids[position] = existing.id
                elif item.instruction is None:
                    ids[position] = NO_TASK
                else:
                    entry = fresh.setdefault(item.instruction.id, (item.instruction, []))
                    entry[1].append(position)
            if not fresh:
                continue
            pair = members[0][1].pair
            positions = [p for _, ps in fresh.values() for p in ps]
            candidates = [(ins.id, ins.text) for ins, _ in fresh.values()]
            try:
                open_task = tasks.open_task(pair_id)
                if open_task is None:
                    new.append(({"data": prefer_data(pair, candidates, self.locations)}, positions))
                    continue
                shown = list(
                    zip(
                        map(str, open_task.data.get("candidate_ids") or []),
                        map(str, open_task.data.get(self._field("candidates")) or []),
                        strict=False,
                    )
                )
                data = prefer_data(pair, [*shown, *candidates], self.locations)
            except UnusableItem:
                for position in positions:
                    ids[position] = NO_TASK
                continue
            self.client().update_task_data(int(open_task.id), data)
            tasks.replace(open_task, data)
            for position in positions:
                ids[position] = open_task.id
        self._import(new, ids, tasks)

    def _import(
        self, payloads: list[tuple[dict[str, Any], list[int]]], ids: list[str], tasks: Snapshot
    ) -> None:
        if not payloads:
            return
        created = self.client().import_tasks(self.project_id(), [p for p, _ in payloads])
        for (payload, positions), task_id in zip(payloads, created, strict=True):
            tasks.add(ExportedTask(str(task_id), payload["data"], None, ()))
            for position in positions:
                ids[position] = str(task_id)

    # -- pull -----------------------------------------------------------------------------------

    def pull(self, tasks: Sequence[tuple[Item, str]]) -> list[list[Item] | SampleError | None]:
        self._remember([item for item, _ in tasks])
        snapshot = self._pulled_tasks()
        out: list[list[Item] | SampleError | None] = []
        for item, _ in tasks:
            task = snapshot.find(item)
            out.append(self._missing(item) if task is None else self._outcome(item, task))
        return out

    def _missing(self, item: Item) -> SampleError | None:
        """An item without a task: refused at push, deleted from the project since, or not in
        the export file yet. A refused item stays an error until it is fixed; the others wait
        (pushed again first when the server is the source)."""
        try:
            if self.config.task == "prefer":
                if item.instruction is None:
                    raise UnusableItem("the item has no instruction to show")
                prefer_data(item.pair, [(item.instruction.id, "")], self.locations)
            else:
                self._single_task(item)
        except UnusableItem as exc:
            return SampleError.from_exception(exc)
        if not self.config.export_file:
            self.push([item])
        return None

    def _outcome(self, item: Item, task: ExportedTask) -> list[Item] | SampleError | None:
        if self.config.task == "prefer":
            candidates = self._candidates(item.pair.id, task)
            if isinstance(candidates, SampleError):
                return candidates
            shown = [c.text for c in candidates]
        else:
            candidates = []
            shown = [item.instruction.text if item.instruction else ""]
        try:
            resolved = resolve(
                self.config.task, task, shown, self.config.resolution, self.config.min_annotations
            )
        except Rejected as exc:
            return SampleError(error_type="AnnotationError", message=f"task {task.id}: {exc}")
        if resolved is None:
            return None
        self._audit(task)
        return self.builder.items(item, task, resolved, candidates)

    def _candidates(self, pair_id: str, task: ExportedTask) -> list[Instruction] | SampleError:
        """The instruction records a prefer task showed, in order: from this pull's items, else
        from the store (candidates of other batches or runs). A candidate found in neither fails
        the task: a record is never rebuilt from task data, which lacks its origin and author."""
        ids = [str(i) for i in task.data.get("candidate_ids") or []]
        missing = [i for i in ids if i not in self._known]
        if missing and self.context.records is not None:
            self._known.update(self.context.records("instruction", missing))
        unknown = [i for i in ids if i not in self._known]
        if unknown or not ids:
            return SampleError(
                error_type="UnknownCandidate",
                message=f"task {task.id}: candidate instruction(s) {', '.join(unknown) or '-'} of "
                f"pair {pair_id} are not in the store",
            )
        return [self._known[i] for i in ids]

    def _audit(self, task: ExportedTask) -> None:
        """Keep every finished task's annotations, skipped ones too, in the call log."""
        calls = self.context.calls
        if calls is None:
            return
        key = request_hash(
            "label-studio", self.builder.origin, [task.id, [a.summary() for a in task.annotations]]
        )
        if key in self._audited:
            return
        self._audited.add(key)
        if not calls.lookup([key]):
            calls.record(
                key,
                provider="label-studio",
                model=self.builder.origin,
                status="ok",
                response={"task": task.id, "export": task.raw},
            )

    # -- source: import an export -------------------------------------------------------------

    def rows(self) -> Iterator[SourceRow]:
        if not (self.config.export_file or self.config.url or os.environ.get("LABEL_STUDIO_URL")):
            raise EcapError("label-studio source: set export_file (an export) or url (a server)")
        for entry in self._read(create=False):
            if isinstance(entry, BadRow):
                yield SourceRow(
                    key=digest("label-studio-bad-row", entry.where, entry.message),
                    data={"error": f"{entry.where}: {entry.message}"},
                )
                continue
            stats = [self._stat(entry.data.get(self._field(f))) for f in IMAGE_FIELDS]
            key = digest("label-studio-task", self.config.task, entry.raw, stats)
            yield SourceRow(key=key, data={"task": entry})

    def _stat(self, reference: Any) -> list[int] | None:
        try:
            stat = self.locations.path_for(reference).stat()
        except (ValueError, OSError):  # ImagePathError is a ValueError; loading reports it
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def load(self, batch: Sequence[SourceRow]) -> list[list[Item] | SampleError]:
        out: list[list[Item] | SampleError] = []
        for row in batch:
            if "error" in row.data:
                out.append(SampleError(error_type="ExportError", message=row.data["error"]))
            else:
                out.append(self._import_task(row.data["task"]))
        return out

    def _import_task(self, task: ExportedTask) -> list[Item] | SampleError:
        where = f"task {task.id}"
        try:
            pair = Pair.of(
                self._image(task.data.get(self._field("source_image"))),
                self._image(task.data.get(self._field("target_image"))),
            )
        except (ImagePathError, OSError, ValueError) as exc:
            return SampleError(
                error_type="UnknownPair", message=f"{where}: cannot be matched to a pair: {exc}"
            )
        expected = task.data.get("pair_id")
        if expected is not None and expected != pair.id:
            return SampleError(
                error_type="UnknownPair",
                message=f"{where}: its images are not those of pair {expected} that it was made "
                "for (changed since?)",
            )
        shown = self._shown(task, pair)
        if isinstance(shown, SampleError):
            return shown
        try:
            resolved = resolve(
                self.config.task,
                task,
                [s.text for s in shown],
                self.config.resolution,
                self.config.min_annotations,
            )
        except Rejected as exc:
            return SampleError(error_type="AnnotationError", message=f"{where}: {exc}")
        if resolved is None:
            return []  # unfinished: nothing to import yet
        self._audit(task)
        bases = [Item(pair=pair, instruction=s) for s in shown]
        made = [o for b in bases for o in self.builder.items(b, task, resolved, shown)]
        if not made:
            return []
        if self.config.output_shown and self.config.task != "evaluate":
            return bases + made  # a verdict's item carries its instruction already
        # The instructions the human records derive from are lineage, not outputs: a training
        # step reading this one must not learn from them (a needs_fix one least of all).
        if self.context.save_records is not None:
            self.context.save_records([pair, *shown])
        return made

    def _shown(self, task: ExportedTask, pair: Pair) -> list[Instruction] | SampleError:
        """The instructions an exported task showed, as records: their ids when ecap made the
        task, else ids derived from the text."""
        data = task.data
        raw = task.raw if isinstance(task.raw, dict) else {}
        author = next(
            (
                str(p["model_version"])
                for p in raw.get("predictions") or []
                if isinstance(p, dict) and p.get("model_version")
            ),
            None,
        )
        name = self._field("candidates" if self.config.task == "prefer" else "instruction")
        texts = data.get(name) if self.config.task == "prefer" else [data.get(name)]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return SampleError(
                error_type="ExportError",
                message=f"task {task.id}: no instruction text in its data field '{name}'",
            )
        prefer = self.config.task == "prefer"
        ids = data.get("candidate_ids") if prefer else [data.get("instruction_id")]
        if not isinstance(ids, list) or len(ids) != len(texts):
            ids = [None] * len(texts)
        # Ids derived from the text take the time of the task's first submitted annotation:
        # both export formats have it (JSON_MIN has no task creation time, nor skipped ones).
        first = min(
            (
                when
                for a in task.annotations
                if not a.cancelled and (when := parse_time(a.created_at))
            ),
            default=EPOCH,
        )
        return [
            Instruction(
                id=str(i) if i else stable_id(first, "instruction", pair.id, n, text),
                pair_id=pair.id,
                text=text,
                origin=self.config.instruction_origin,
                author=author,
                candidate=n,
            )
            for n, (i, text) in enumerate(zip(ids, texts, strict=False))
        ]

    def _image(self, reference: Any) -> ImageRef:
        path = self.locations.path_for(reference)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read image {path}: {exc.strerror}") from exc
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                width, height, fmt = image.width, image.height, image.format
        except UnidentifiedImageError:  # its message is the repr of the in-memory file
            raise ValueError(f"{path} is not an image (no known image format)") from None
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"{path} is not a readable image ({exc})") from exc
        return ImageRef(
            uri=str(path),
            sha256=hashlib.sha256(data).hexdigest(),
            width=width,
            height=height,
            format=fmt,
        )


__all__ = ["LabelStudioConfig", "LabelStudioSource"]


class LabelStudioAnnotator(LabelStudioProject, Annotator):
    """``annotate: label-studio``: items become tasks; the step waits until people finish them."""


class LabelStudioSource(LabelStudioProject, Source):
    """``source: label-studio``: finished tasks of a project or an export file, imported."""
