"""DeepSpeed ZeRO on the CPU: deepspeed's CPU accelerator over gloo, through accelerate's own DeepSpeed path.

How it runs (accelerate 1.16, transformers 5.25, deepspeed 0.19): ``accelerate launch`` with a DeepSpeed
config starts the ranks with torchrun and ``ACCELERATE_USE_DEEPSPEED=true`` but, unlike its other launchers,
does not export ``ACCELERATE_USE_CPU``. dpo_hub's ``PartialState(cpu=True)`` sets up gloo (``MULTI_CPU``);
the Trainer's ``Accelerator`` is created without ``cpu`` and ``AcceleratorState`` (``state.py``:
``ACCELERATE_USE_DEEPSPEED ... and not cpu``) turns the state into ``DEEPSPEED`` with the plugin transformers
built from the launch. ``deepspeed.initialize`` then runs on deepspeed's CPU accelerator, which uses gloo
when oneCCL is not installed (and JIT-builds its shared-memory all-reduce op once, with ninja and a C++
compiler, into ``~/.cache/torch_extensions``). Nothing here patches accelerate: :func:`confirm` only checks
that the state really is DeepSpeed, so an environment or a version where it stays CPU DDP stops instead of
quietly training as DDP.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dpo_hub.errors import RecipeError
from dpo_hub.runtime import missing_on_path

log = logging.getLogger("dpo_hub")


def wanted() -> bool:
    """Whether this process was launched for DeepSpeed (``accelerate launch`` with a DeepSpeed config)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def missing_build_tools() -> list[str]:
    """What deepspeed's CPU accelerator needs on ``PATH`` and lacks: a C++ compiler (``CXX`` or ``c++``) to
    JIT-build its shared-memory op on the first run, and ninja, which torch runs on every load."""
    return missing_on_path(os.environ.get("CXX") or "c++", "ninja")


def prepare_environment() -> None:
    """Before deepspeed is first imported in this process: its CPU accelerator, named rather than guessed
    (deepspeed warns when it falls back to the CPU by itself)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def confirm(trainer: Any) -> None:
    """After the trainer's accelerator is created on the CPU: the state is DeepSpeed (logged with its ZeRO
    stage), or ``RecipeError`` naming why accelerate kept plain CPU DDP."""
    from accelerate.utils import DistributedType

    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.DEEPSPEED or not trainer.is_deepspeed_enabled:
        forced = os.environ.get("ACCELERATE_USE_CPU", "")
        because = f"ACCELERATE_USE_CPU={forced} is set" if forced else "the installed accelerate kept it"
        raise RecipeError(
            f"this launch asks for DeepSpeed but accelerate set up {state.distributed_type.value} "
            f"({because}), which would train as plain DDP; unset ACCELERATE_USE_CPU (deepspeed picks the "
            "CPU by itself), or use accelerate_configs/cpu_ddp.yaml"
        )
    log.info(
        "DeepSpeed ZeRO-%d on the CPU over %d gloo processes (deepspeed's CPU accelerator)",
        state.deepspeed_plugin.zero_stage,
        state.num_processes,
    )
