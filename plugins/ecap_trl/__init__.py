"""``sft`` and ``dpo`` trainers on TRL, peft and DeepSpeed (``pip install 'editcaption[train]'``).

Nothing heavy is imported until a step trains.
"""

from __future__ import annotations

from ecap.hookspecs import Register, hookimpl

from .trainers import DPOTrainer, SFTTrainer


@hookimpl
def register_trainers(register: Register) -> None:
    register("sft", SFTTrainer)
    register("dpo", DPOTrainer)
