"""A small Label Studio REST client over httpx: only the calls the plugin makes.

Why not ``label-studio-sdk``: version 2.x pulls in pandas, opencv, nltk, black, Faker and
datamodel-code-generator, and pins numpy below the version ecap's other extras use, for the dozen
REST calls below. httpx is already what the rest of the HTTP world in ecap's environment uses.

Errors: a refused token, a missing project or a request the server rejects as invalid are
:class:`LabelStudioError` (an ``EcapError``: retrying cannot fix them, the message says what to do).
Connection problems and server errors are raised as httpx exceptions; a re-run retries them.
"""

from __future__ import annotations

import json
from typing import Any

from ecap.errors import EcapError
from ecap.interfaces import require


class LabelStudioError(EcapError):
    """The server refused a request for a reason a retry cannot fix."""


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        problems = body.get("validation_errors") or body.get("detail") or body
        return json.dumps(problems)[:1000] if not isinstance(problems, str) else problems
    return json.dumps(body)[:1000]


def _is_jwt(token: str) -> bool:
    """Personal access tokens are JWTs (three dot-separated parts); legacy tokens are hex."""
    return token.count(".") == 2 and token.startswith("ey")


class LabelStudioClient:
    """Talks to one server as one user. ``token`` is a legacy API token or a personal access
    token (a JWT refresh token, exchanged for an access token on first use)."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        httpx = require("httpx", "labelstudio", "label-studio")
        self.url = url.rstrip("/")
        self._token = token
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            transport=httpx.HTTPTransport(retries=2),  # reconnects only; never re-sends a POST
        )
        self._auth: str | None = None

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _authorization(self) -> str:
        if self._auth is None:
            if _is_jwt(self._token):
                response = self._http.post("/api/token/refresh/", json={"refresh": self._token})
                if response.status_code != 200:
                    raise LabelStudioError(
                        f"Label Studio at {self.url} refused the personal access token "
                        f"({response.status_code}: {_detail(response)})"
                    )
                self._auth = f"Bearer {response.json()['access']}"
            else:
                self._auth = f"Token {self._token}"
        return self._auth

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body (``None`` when empty)."""
        headers = {"Authorization": self._authorization()}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code == 401 and _is_jwt(self._token):  # access tokens expire
            self._auth = None
            headers = {"Authorization": self._authorization()}
            response = self._http.request(method, path, headers=headers, **kwargs)
        status = response.status_code
        if status in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the API token for {method} {path} "
                f"({status}: {_detail(response)}); set api_key or $LABEL_STUDIO_API_KEY to a "
                "valid token (Account & Settings in the Label Studio UI)"
            )
        if status == 404:
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} not found")
        if 400 <= status < 500:
            raise LabelStudioError(
                f"Label Studio at {self.url} rejected {method} {path} ({status}): "
                f"{_detail(response)}"
            )
        response.raise_for_status()  # 5xx: transient, an httpx error
        return response.json() if response.content else None

    # -- calls ------------------------------------------------------------------------------

    def projects(self, title: str) -> list[dict[str, Any]]:
        """Projects whose title is exactly ``title`` (the server filters by substring)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.request(
                "GET", "/api/projects", params={"title": title, "page": page, "page_size": 100}
            )
            found += [p for p in body.get("results", []) if p.get("title") == title]
            if not body.get("next"):
                return found
            page += 1

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/projects/{project_id}"))

    def create_project(
        self, title: str, label_config: str, description: str, *, maximum_annotations: int = 1
    ) -> dict[str, Any]:
        """``maximum_annotations`` is the overlap: how many people the server hands each task to
        before it counts as completed there."""
        body = {
            "title": title,
            "label_config": label_config,
            "description": description,
            "maximum_annotations": maximum_annotations,
        }
        return dict(self.request("POST", "/api/projects", json=body))

    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/storages/localfiles", params={"project": project_id}))

    def create_local_storage(self, project_id: int, path: str, title: str) -> dict[str, Any]:
        """A local-files import storage: the server then serves files under ``path`` to this
        project's tasks. Never synced: ecap imports the tasks itself."""
        body = {"project": project_id, "path": path, "title": title, "use_blob_urls": True}
        return dict(self.request("POST", "/api/storages/localfiles", json=body))

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        body = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=tasks,
        )
        ids = [int(i) for i in body.get("task_ids", [])]
        if len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio imported {len(ids)} of {len(tasks)} tasks into project {project_id}"
            )
        return ids

    def update_task_data(self, task_id: int, data: dict[str, Any]) -> None:
        self.request("PATCH", f"/api/tasks/{task_id}", json={"data": data})

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (skipped ones included), in Label
        Studio's JSON export format."""
        body = self.request(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )
        return list(body or [])

    def users(self) -> dict[int, str]:
        """User id -> e-mail (or username), to name annotators."""
        return {
            int(u["id"]): str(u.get("email") or u.get("username") or f"user:{u['id']}")
            for u in self.request("GET", "/api/users") or []
        }

    def create_annotation(self, task_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """Submit an annotation as the UI does (scripted annotators and tests use this)."""
        return dict(self.request("POST", f"/api/tasks/{task_id}/annotations", json=body))

    def create_user(self, email: str) -> int:
        body = self.request(
            "POST", "/api/users", json={"email": email, "username": email.split("@")[0]}
        )
        return int(body["id"])


__all__ = ["LabelStudioClient", "LabelStudioError"]
