"""The ``heuristics`` filter: model-free checks on instructions and pairs (see
:mod:`ecap_heuristics.filter`)."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .filter import HeuristicsFilter


@hookimpl
def register_filters(register: Register) -> None:
    register("heuristics", HeuristicsFilter)
