"""Errors that ecap shows to people.

Every error a user can cause says where (file, line, field) and what to do about it. The CLI prints
``str(error)`` without a traceback for any :class:`EcapError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EcapError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class MissingExtraError(EcapError, ImportError):
    """A plugin needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, plugin: str | None = None) -> None:
        who = f"plugin '{plugin}'" if plugin else "this feature"
        super().__init__(
            f"{who} needs the Python package '{module}', which is not installed.\n"
            f"Install it with: pip install 'editcaption[{extra}]'"
        )
        self.extra = extra
        self.module = module


class SpecError(EcapError):
    """A pipeline spec is invalid. Carries every problem found, each with its location."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SpecProblem:
    """One problem in a spec: ``file:line: field: message``."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class StoreError(EcapError):
    """The store cannot be opened or is at the wrong schema version."""


class PluginError(EcapError):
    """A plugin is missing, broken or registered twice."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" — did you mean 'x'?"`` for the closest choice, or a list of choices."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f" — did you mean '{close[0]}'?"
    if options:
        return f" (choose from: {', '.join(options)})"
    return ""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped from outside (Ctrl-C, SIGTERM). ``exit_code`` follows the shell's
    convention, 128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int = 2) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum
