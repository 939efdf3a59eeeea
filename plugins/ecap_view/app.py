"""The web application: Starlette routes rendering Jinja2 templates over one open store.

Every route answers GET (and HEAD) only: the page reads the store and never writes it (the store
is also opened read-only, so a write would fail even by mistake). Imported only by the ``view``
command and tests, after the ``view`` extra is known to be installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ecap.defects import CHECKLIST
from ecap.errors import EcapError
from ecap.interfaces import PluginContext
from ecap.plugins import get_registry
from ecap.provenance import walk
from ecap.records import Item
from ecap.store import Store

from . import charts, queries
from .images import ImageRefused, pair_image

HERE = Path(__file__).parent
#: Formats a selection can be downloaded in: the file formats ``ecap export`` writes.
EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _when(moment: datetime | str | None) -> str:
    """A UTC timestamp to the second (raw SQL hands SQLite's back as text)."""
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _link(path: str, params: dict[str, Any] | None = None, **more: Any) -> str:
    """``path`` with a query string of the non-empty ``params`` and ``more``."""
    merged = {k: v for k, v in {**(params or {}), **more}.items() if v not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(merged)}" if merged else path


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["short"] = lambda value: str(value or "")[:12]
    env.filters["when"] = _when
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, default=str)
    env.filters["num"] = lambda value: "-" if value is None else f"{value:.2f}"
    env.globals["duration"] = _duration
    env.globals["link"] = _link
    env.globals["summary"] = queries.summary
    return env


class ViewApp:
    """The routes over one store. Handlers are plain functions: Starlette runs them in its
    thread pool, so a slow query never blocks the event loop."""

    def __init__(self, store: Store, page_size: int) -> None:
        self.store = store
        self.page_size = page_size
        self.env = _environment()

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        body = self.env.get_template(template).render(
            request=request, store_url=self.store.redacted_url, **context
        )
        return HTMLResponse(body, status_code=status)

    def problem(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "problem.html", status=status, message=message)

    # -- runs and steps ----------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        return self.render(request, "runs.html", runs=self.store.runs(limit=200))

    def run(self, request: Request) -> Response:
        run = self.store.run(request.path_params["run_id"])
        if run is None:
            return self.problem(request, 404, f"no run {request.path_params['run_id']}")
        steps = self.store.step_runs(run["id"])
        failed = queries.failure_counts(self.store, [s["id"] for s in steps])
        first = {
            s["id"]: queries.failures(self.store, s["id"], None, limit=3).rows
            for s in steps
            if failed.get(s["id"])
        }
        return self.render(
            request, "run.html", run=run, steps=steps, failed=failed, first_failures=first
        )

    def step(self, request: Request) -> Response:
        step = self.store.step_run(request.path_params["step_run_id"])
        if step is None:
            return self.problem(request, 404, f"no step run {request.path_params['step_run_id']}")
        shown = request.query_params.get("records") or queries.KIND_OUTPUT.get(step["kind"], "pair")
        if shown not in queries.TABLES:
            return self.problem(request, 400, f"no record type {shown!r}")
        records = queries.step_records(
            self.store, shown, step["id"], request.query_params.get("after") or None, self.page_size
        )
        after_failure = request.query_params.get("failures_after", "")
        failures = queries.failures(
            self.store,
            step["id"],
            int(after_failure) if after_failure.isdigit() else None,
            self.page_size,
        )
        label = {step["id"]: step["step_id"]}
        plots = [
            charts.line_plot(name, lines)
            for name, lines in charts.curves(self.store.metrics([step["id"]]), label).items()
        ]
        return self.render(
            request,
            "step.html",
            step=step,
            run=self.store.run(step["run_id"]),
            shown=shown,
            record_types=list(queries.TABLES),
            records=records,
            failures=failures,
            failure_total=queries.failure_counts(self.store, [step["id"]]).get(step["id"], 0),
            plots=plots,
        )

    # -- pairs and images --------------------------------------------------------------------

    def pair(self, request: Request) -> Response:
        view = queries.pair_view(self.store, request.path_params["pair_id"])
        if view is None:
            return self.problem(request, 404, f"no pair {request.path_params['pair_id']}")
        return self.render(
            request,
            "pair.html",
            view=view,
            steps=queries.step_runs_by_id(self.store, view.step_run_ids()),
        )

    def image(self, request: Request) -> Response:
        try:
            image = pair_image(
                self.store, request.path_params["pair_id"], request.path_params["side"]
            )
        except ImageRefused as refused:
            return Response(refused.reason, status_code=refused.status, media_type="text/plain")
        return Response(
            image.data, media_type=image.mime, headers={"Cache-Control": "private, max-age=3600"}
        )

    # -- lineage -----------------------------------------------------------------------------

    def lineage(self, request: Request) -> Response:
        try:
            depth = max(1, min(int(request.query_params.get("depth", "4")), 10))
            graph = walk(self.store, request.path_params["record_id"], depth=depth)
        except ValueError:
            return self.problem(request, 400, "depth must be a whole number")
        except EcapError as exc:
            return self.problem(request, 404, str(exc))
        return self.render(request, "lineage.html", graph=graph, depth=depth)

    # -- report ------------------------------------------------------------------------------

    def report(self, request: Request) -> Response:
        from ecap.report import ReportOptions, build_report
        from ecap.report.render import cell_text, grid

        tables: list[dict[str, Any]] = []
        notes: list[str] = []
        unavailable = None
        try:
            report = build_report(self.store, ReportOptions(resamples=200))
        except EcapError as exc:  # the report extra is missing, or the selection is empty
            unavailable = str(exc)
        else:
            notes = report.notes
            for table in report.tables:
                if table.rows:
                    header, rows = grid(table, cell_text)
                    keys = len([c for c in table.shown_keys() if c.key != table.pivot])
                    tables.append(
                        {
                            "title": table.title,
                            "blurb": table.blurb,
                            "header": header,
                            "rows": rows,
                            "keys": keys,
                        }
                    )
        trains = queries.train_step_runs(self.store)
        labels = {t["id"]: f"{t['step_id']} ({t['run_id'][:8]})" for t in trains}
        metric_rows = self.store.metrics(list(labels)) if labels else []
        plots = [charts.line_plot(n, c) for n, c in charts.curves(metric_rows, labels).items()]
        return self.render(
            request, "report.html", tables=tables, notes=notes, unavailable=unavailable, plots=plots
        )

    # -- search and export -------------------------------------------------------------------

    def search(self, request: Request) -> Response:
        try:
            filters = queries.Filters.from_query(request.query_params)
        except EcapError as exc:
            return self.problem(request, 400, str(exc))
        after = request.query_params.get("after") or None
        page = queries.search_ids(self.store, filters, after, self.page_size)
        return self.render(
            request,
            "search.html",
            filters=filters,
            query=filters.query_string(),
            hits=queries.hits(self.store, page.rows),
            after=page.after,
            step_ids=queries.step_ids(self.store),
            defect_codes=[c.code(s) for c in CHECKLIST for s in c.severities],
            formats=list(EXPORT_FORMATS),
        )

    def export(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in EXPORT_FORMATS:
            return self.problem(request, 400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
        try:
            filters = queries.Filters.from_query(request.query_params)
        except EcapError as exc:
            return self.problem(request, 400, str(exc))
        items = [
            Item(
                pair=hit.pair,
                instruction=hit.instruction,
                verdict=hit.verdict,
                score=hit.scores[-1] if hit.scores else None,
            )
            for hit in queries.selection(self.store, filters)
        ]
        folder = Path(tempfile.mkdtemp(prefix="ecap-view-export-"))
        name = f"ecap-selection.{fmt}"
        info = get_registry().get("export", fmt)
        context = PluginContext(step_id="view-export", base_dir=folder, work_dir=folder)
        exporter: Any = info.cls(info.cls.Config.model_validate({"path": name}), context)
        digest = hashlib.sha256("\n".join(i.key() for i in items).encode()).hexdigest()
        result = exporter.export(items, digest)
        return FileResponse(
            result.uri,
            media_type=EXPORT_FORMATS[fmt],
            filename=name,
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )


#: Every response says: nothing but this page's own files runs or loads, no type sniffing, and no
#: address of a page (pair ids, filters) leaks to another site through the Referer header.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    store: Store, page_size: int = queries.PAGE, allowed_hosts: Sequence[str] = ("*",)
) -> Starlette:
    """The application over ``store`` (opened read-only by the command), listing ``page_size``
    rows a page and answering requests whose ``Host`` is one of ``allowed_hosts`` only: a page
    on 127.0.0.1 is then out of reach of a web site that rebinds its own name to 127.0.0.1 to
    read it from a visitor's browser (DNS rebinding)."""
    view = ViewApp(store, page_size)
    routes = [
        Route("/", view.runs, name="runs"),
        Route("/runs/{run_id}", view.run, name="run"),
        Route("/steps/{step_run_id}", view.step, name="step"),
        Route("/pairs/{pair_id}", view.pair, name="pair"),
        Route("/image/{pair_id}/{side}", view.image, name="image"),
        Route("/records/{record_id}/lineage", view.lineage, name="lineage"),
        Route("/report", view.report, name="report"),
        Route("/search", view.search, name="search"),
        Route("/export", view.export, name="export"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    guard = Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return Starlette(routes=routes, middleware=[guard, Middleware(SecurityHeaders)])
