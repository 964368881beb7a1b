"""Where a run runs: what its ``accelerate launch`` asked for against the processes and hardware it got,
and the ``distributed`` record of ``metrics.json``.

accelerate downgrades quietly: an FSDP or GPU config on a machine without GPUs trains as CPU DDP, and
``accelerate launch --cpu --num_processes 4`` starts one process. ``check_launch`` refuses those before
anything loads, naming the shipped config that runs what was asked for here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from dpo_hub.errors import RecipeError
from dpo_hub.training import deepspeed_cpu

CONFIGS = "accelerate_configs"


@dataclass(frozen=True)
class LaunchRequest:
    """What an ``accelerate launch`` command line and its config file ask for, as accelerate reads them."""

    command: str  # how to name it in a message: "accelerate launch --config_file X" or "... --cpu"
    processes: int  # in total, over every machine
    machines: int
    cpu: bool  # use_cpu: true or --cpu
    gpus: bool  # a GPU is asked for: gpu_ids or a GPU strategy, without use_cpu
    fsdp: bool
    deepspeed: bool
    fsdp_version: int = 2
    zero_stage: int | None = None  # DeepSpeed's ZeRO stage (deepspeed_config: zero_stage)


@dataclass(frozen=True)
class Distributed:
    """How the run was spread: ``metrics.json``'s ``distributed`` (and the model card's row)."""

    type: str  # accelerate's distributed type: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    processes: int
    machines: int
    sharded: bool  # the frozen base weights are split between the processes (FSDP, ZeRO-3)
    peak_memory_mb: list[float] | None = None  # per rank, in rank order (PeakMemory.measure)
    peak_memory_of: str | None = None  # what was measured: PEAK_RSS or PEAK_CUDA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = f"{self.processes} process(es) on {self.machines} machine(s)"
        return f"{self.type}, {where}" + (", base weights sharded" if self.sharded else "")

    def describe_memory(self) -> str:
        """The peak memory per rank in words ("not recorded" for runs before it was)."""
        if not self.peak_memory_mb:
            return "not recorded"
        ranks = " / ".join(f"{mb:.0f}" for mb in self.peak_memory_mb)
        return f"{ranks} MB ({self.peak_memory_of})"


PEAK_RSS = "peak RSS of each process (ru_maxrss): weights, activations, libraries and the Python heap"
PEAK_CUDA = "torch.cuda.max_memory_allocated of each rank's GPU (tensors only)"


def peak_memory_per_rank(state: Any) -> tuple[list[float], str]:
    """Each rank's peak memory so far in MB, gathered in rank order, and what was measured (a collective:
    every rank must call it). On a GPU the tensors torch allocated there; on the CPU the process's peak
    resident memory, which includes the Python runtime and libraries (~0.5 GB before any model)."""
    import resource

    import torch

    if state.device.type == "cuda":
        mine, what = torch.cuda.max_memory_allocated(state.device) / 2**20, PEAK_CUDA
    else:  # Linux reports kilobytes
        mine, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, PEAK_RSS
    import torch.distributed as dist

    if state.num_processes == 1 or not (dist.is_available() and dist.is_initialized()):
        return [round(mine, 1)], what
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return [round(mb, 1) for mb in everyone], what


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator) in this process."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def launched_world() -> tuple[int, int]:
    """(processes, machines) the launcher really started, from torchrun's variables (1, 1 without one)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or world
    return world, max(1, world // local)


def check_launch(request: LaunchRequest | None, accelerator: bool | None = None) -> None:
    """Refuse a launch that would run something other than it asks for on this machine (``RecipeError``
    naming the config that fits); ``None`` (not started by ``accelerate launch``): nothing to check."""
    if request is None:
        return
    accelerator = has_accelerator() if accelerator is None else accelerator
    processes, machines = launched_world()
    if not accelerator and request.deepspeed:
        _check_deepspeed_on_cpu(request)
    if not accelerator and request.gpus:
        asked = "FSDP on GPUs" if request.fsdp else "a GPU"
        raise RecipeError(
            f"{request.command} asks for {asked} and this machine has no GPU visible (accelerate would "
            f"quietly train on the CPU instead); on the CPU use {cpu_config(request)}"
        )
    if not accelerator and request.fsdp and request.fsdp_version != 2:
        raise RecipeError(
            f"{request.command} asks for FSDP version {request.fsdp_version} on the CPU, which accelerate "
            f"runs as plain DDP; use {cpu_config(request)} (FSDP2)"
        )
    if (request.processes, request.machines) != (processes, machines):
        raise RecipeError(
            f"{request.command} asks for {request.processes} process(es) on {request.machines} machine(s) "
            f"but accelerate started {processes} on {machines} (accelerate launch --cpu and MULTI_CPU "
            f"configs start one process without mpirun); use {cpu_config(request)}"
        )


def _check_deepspeed_on_cpu(request: LaunchRequest) -> None:
    """DeepSpeed without a GPU runs ZeRO-2 on deepspeed's CPU accelerator (``deepspeed_cpu.py``) from a config
    that says ``use_cpu: true``; anything else stops here, naming what runs."""
    if not request.cpu:
        raise RecipeError(
            f"{request.command} asks for DeepSpeed on GPUs and this machine has no GPU visible; on the CPU "
            f"use --config_file {CONFIGS}/deepspeed_zero2_cpu.yaml (ZeRO-2), or {CONFIGS}/fsdp_cpu.yaml to "
            "shard the base"
        )
    if request.zero_stage == 3:
        raise RecipeError(
            f"{request.command} asks for DeepSpeed ZeRO-3 on the CPU, which stops in the first backward: trl "
            "1.16's fused LM head re-gathers the ZeRO-3 head from its saved tensors, which have lost "
            "DeepSpeed's ds_status (trl/kernels/chunked_logprob.py, backward); use --config_file "
            f"{CONFIGS}/deepspeed_zero2_cpu.yaml, or {CONFIGS}/fsdp_cpu.yaml to shard the base"
        )
    missing = deepspeed_cpu.missing_build_tools()
    if missing:
        raise RecipeError(
            f"{request.command} runs DeepSpeed on the CPU, whose first run builds an op with a C++ compiler "
            f"and ninja, and {' and '.join(missing)} is not on PATH; install them (e.g. apt-get install g++ "
            f"ninja-build, or pip install ninja), or use --config_file {CONFIGS}/cpu_ddp.yaml"
        )


def cpu_config(request: LaunchRequest) -> str:
    """The shipped config (and flags) that runs ``request``'s process count on CPUs."""
    if request.machines > 1:
        return f"--config_file {CONFIGS}/multi_node_cpu.yaml with --machine_rank and --main_process_ip"
    if request.fsdp:
        flags = "" if request.processes == 2 else f" --num_processes {request.processes}"
        return f"--config_file {CONFIGS}/fsdp_cpu.yaml{flags}"
    if request.processes <= 1:
        return f"--config_file {CONFIGS}/cpu.yaml"
    flags = "" if request.processes == 2 else f" --num_processes {request.processes}"
    return f"--config_file {CONFIGS}/cpu_ddp.yaml{flags}"


def distributed(state: Any, sharded: bool, peak_memory: tuple[list[float], str] | None = None) -> Distributed:
    """The record of ``state`` (accelerate's), ``sharded`` as the trainer placed the weights, and
    ``peak_memory`` (:func:`peak_memory_per_rank`)."""
    processes, machines = launched_world()
    if processes != state.num_processes:  # not torchrun (mpirun, a notebook launcher): trust accelerate
        processes, machines = state.num_processes, 1
    kind = state.distributed_type.value
    memory, what = peak_memory or (None, None)
    return Distributed(kind, processes, machines, sharded, memory, what)
