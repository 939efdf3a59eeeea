"""Built-in ``view`` plugin: ``ecap view``, a local read-only web page over a store.

Pairs side by side with every instruction written for them, their scores, filter flags and judge
verdicts; runs and steps with counts, failures and timings; the lineage of any record; the report
with training curves; search with keyset paging and export of what the search selects. The web
stack (Starlette, Jinja2, uvicorn) is the ``view`` extra, imported only when the command runs.
"""

from __future__ import annotations

from ecap.hookspecs import hookimpl


@hookimpl
def register_commands(cli: object) -> None:
    from .command import view_command

    cli.add_command(view_command)  # type: ignore[attr-defined]
