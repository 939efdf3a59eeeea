"""Benchmark importers (``source:`` plugins) for public image-editing sets, from local files in
their published layouts: ``hq-edit``, ``bytemorph``, ``magicbrush`` and ``instructpix2pix``."""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .source import ByteMorphSource, HQEditSource, InstructPix2PixSource, MagicBrushSource


@hookimpl
def register_sources(register: Register) -> None:
    register("hq-edit", HQEditSource)
    register("bytemorph", ByteMorphSource)
    register("magicbrush", MagicBrushSource)
    register("instructpix2pix", InstructPix2PixSource)
