"""``sft`` and ``dpo`` trainers on TRL, peft and DeepSpeed (``pip install 'editcaption[train]'``),
and ``sft`` and ``dpo`` exporters that write the same rows for TRL scripts outside ecap.

Nothing heavy is imported until a step trains. ``ecap report`` gains a training section (loss
and DPO reward curves, :mod:`ecap_trl.report`).
"""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .export import DpoExporter, SftExporter
from .trainers import DPOTrainer, SFTTrainer


@hookimpl
def register_trainers(register: Register) -> None:
    register("sft", SFTTrainer)
    register("dpo", DPOTrainer)


@hookimpl
def register_exporters(register: Register) -> None:
    register("sft", SftExporter)
    register("dpo", DpoExporter)


@hookimpl
def register_report_sections(register: Register) -> None:
    register("training", "ecap_trl.report:TrainingSection")
