"""The ``editscore`` filter: the official EditScore reward models on any VLM backend (see
:mod:`ecap_editscore.filter`)."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .filter import EditScoreFilter


@hookimpl
def register_filters(register: Register) -> None:
    register("editscore", EditScoreFilter)
