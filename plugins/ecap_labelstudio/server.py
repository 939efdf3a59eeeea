"""A local Label Studio server: installed into a virtual environment of its own, started on
127.0.0.1, stopped cleanly. Used by the test suite, the human-loop example and
``ecap labelstudio serve``.

Why a separate environment: the Label Studio server pins ``openai<2`` and an exact version of its
own SDK, which cannot live next to the judges' SDKs in ecap's environment. ecap only talks to the
server over HTTP, so the two never need to share packages.

Three settings matter on a fresh data folder, and only on its first start, because Label Studio
stores them with the organisation it creates then:

- ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``: without it the preset user token is stored but
  every API call answers 401 ("legacy token authentication has been disabled").
- ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED`` and ``..._DOCUMENT_ROOT``: tasks can then show
  images from the local disk, through a project's local-files storage.
- ``LABEL_STUDIO_LATEST_VERSION_CHECK=false``: otherwise every start asks pypi.org.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from ecap.errors import EcapError

#: The server version the plugin is tested against.
VERSION = "1.23.2"
VENV_ENV = "ECAP_LABEL_STUDIO_VENV"


def venv_path() -> Path:
    """Where the server's virtual environment lives: ``$ECAP_LABEL_STUDIO_VENV``, else
    ``~/.cache/ecap/label-studio-venv``."""
    configured = os.environ.get(VENV_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path("~/.cache/ecap/label-studio-venv").expanduser()


def executable(venv: Path | None = None) -> Path | None:
    """The ``label-studio`` command inside the environment, or ``None`` when it is not installed."""
    folder = (venv or venv_path()) / ("Scripts" if os.name == "nt" else "bin")
    for name in ("label-studio", "label-studio.exe"):
        if (folder / name).is_file():
            return folder / name
    return None


def installed_version(venv: Path | None = None) -> str | None:
    """The label-studio version installed in the environment, or ``None`` when there is none."""
    venv = venv or venv_path()
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if executable(venv) is None or not python.exists():
        return None
    found = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = found.stdout.strip()
    return version if found.returncode == 0 and version else None


def write_secret(path: Path, secret: str) -> None:
    """Write a credential readable by its owner only, from the first byte on (never chmod after:
    someone could open the file in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a file that existed keeps its mode otherwise
        out.write(secret)


def install(venv: Path | None = None, version: str = VERSION) -> Path:
    """Create the environment (if needed) and install ``label-studio==version`` into it."""
    venv = venv or venv_path()
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            f"label-studio=={version}",
        ],
        check=True,
    )
    found = executable(venv)
    if found is None:
        raise EcapError(f"label-studio was installed into {venv} but its command is missing")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """One Label Studio process with its data in ``data_dir``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``token`` is the admin's API
    token: pass a fixed one to reuse a data folder across restarts (it is only stored on the first
    start), or let the server get a random one.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        document_root: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        token: str | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        venv: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.document_root = Path(document_root or self.data_dir / "files").resolve()
        self.host = host
        self.port = port or free_port(host)
        self.token = token or secrets.token_hex(20)
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.venv = venv
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir / "base"),
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.document_root),
            LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        )
        return env

    def start(self, timeout: float = 240.0) -> LocalServer:
        command = executable(self.venv)
        if command is None:
            raise EcapError(
                f"no Label Studio server in {self.venv or venv_path()}: install it with "
                "`ecap labelstudio install-server` (or set ECAP_LABEL_STUDIO_VENV)"
            )
        # The data folder holds the database (users, tokens): its owner's only.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.document_root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(command),
                    "start",
                    "--no-browser",
                    "--host",
                    self.url,
                    "--port",
                    str(self.port),
                    "--internal-host",
                    self.host,
                ],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so stop() ends its children too
            )
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EcapError(
                    f"Label Studio exited with status {self.process.returncode} while starting; "
                    f"see {self.log_file}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise EcapError(f"Label Studio did not answer /health in time; see {self.log_file}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        self._signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._signal(process, signal.SIGKILL)
            process.wait(timeout=5)

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
        """Signal the server's own process group (it was started in a new session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def __enter__(self) -> LocalServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "VERSION",
    "LocalServer",
    "executable",
    "free_port",
    "install",
    "installed_version",
    "venv_path",
    "write_secret",
]
