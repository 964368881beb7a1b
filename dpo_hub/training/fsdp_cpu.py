"""FSDP2 on the CPU: accelerate's own FSDP2 path (``fully_shard`` over gloo) for an FSDP launch without GPUs.

accelerate 1.16 applies its FSDP plugin only on accelerators: on the CPU ``AcceleratorState`` keeps
``MULTI_CPU`` and the run trains as plain DDP. torch's FSDP2 itself works on the CPU, so for an FSDP
version 2 launch ``enable`` hands the trainer's accelerator the plugin accelerate built from the launch
(``FSDP_*`` variables) and sets its type to ``FSDP``: preparing the model then shards it with accelerate's
``fsdp2_prepare_model``, and saving, checkpoints and evaluation take the Trainer's FSDP branches. This is
the one place of the workaround; it is checked against the accelerate version it was written for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from transformers import TrainerCallback

from dpo_hub.errors import RecipeError

log = logging.getLogger("dpo_hub")
TESTED_ACCELERATE = ("1", "16")  # major, minor: the state attributes set below are those of this version


def wanted() -> bool:
    """Whether this process was launched for FSDP (``accelerate launch`` with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable(trainer: Any) -> bool:
    """Switch ``trainer`` (transformers' Trainer, its accelerator just created) to FSDP2 when the launch asked
    for FSDP and accelerate left it as CPU DDP; returns whether it did. Refuses FSDP1 and other accelerate
    versions (``RecipeError``) rather than training as DDP."""
    import accelerate
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if tuple(accelerate.__version__.split(".")[:2]) != TESTED_ACCELERATE:
        raise RecipeError(
            f"FSDP on the CPU: dpo_hub enables it on accelerate {'.'.join(TESTED_ACCELERATE)} and accelerate "
            f"{accelerate.__version__} is installed; use accelerate_configs/cpu_ddp.yaml (or install "
            f"accelerate=={'.'.join(TESTED_ACCELERATE)}.*)"
        )
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch exported
    if plugin.fsdp_version != 2:
        raise RecipeError(
            f"fsdp_version {plugin.fsdp_version} on the CPU: only FSDP2 runs here; set fsdp_version: 2 "
            "(see accelerate_configs/fsdp_cpu.yaml)"
        )
    state.fsdp_plugin = plugin
    # AcceleratorState copies PartialState's fields each time it is constructed again: set both
    state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    trainer.fsdp_on_cpu = True
    log.info("FSDP2 on the CPU: the base model is sharded over %d gloo processes", state.num_processes)
    return True


def full_state_dict(model: Any) -> dict[str, Any]:
    """The model's full state dict, gathered on every rank (a collective: every rank must call it).

    accelerate's ``get_state_dict`` asks torch for a CPU-offloaded full state dict, which on the CPU returns
    views of the unsharded parameters' storage, freed when FSDP reshards (peft then fails with "invalid
    python storage"); ``full_tensor`` gives each tensor storage of its own.
    """
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach().clone()
    return state


def shard_report(model: Any) -> dict[str, int]:
    """How many of the base (frozen) and adapter (trainable) parameters this rank holds locally."""
    held = {"base_held": 0, "base_total": 0, "adapter_held": 0, "adapter_total": 0}
    for parameter in model.parameters():
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter  # a DTensor's shard
        kind = "adapter" if parameter.requires_grad else "base"
        held[f"{kind}_held"] += local.numel()
        held[f"{kind}_total"] += parameter.numel()
    return held


class ShardLog(TrainerCallback):
    """Once the model is sharded (training starts): each rank prints how much of the base it holds (any
    FSDP run, on the CPU or GPUs)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        import torch.distributed as dist

        held = shard_report(model)
        rank = dist.get_rank() if dist.is_initialized() else 0
        share = held["base_held"] / max(1, held["base_total"])
        print(
            f"[dpo_hub] FSDP rank {rank}: holds {held['base_held']} of {held['base_total']} base parameters "
            f"({share:.0%}), {held['adapter_held']} of {held['adapter_total']} adapter parameters",
            flush=True,
        )
