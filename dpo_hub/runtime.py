"""Process-level setup for a run: which device, how many CPU threads, logging on the main process only."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("dpo_hub")


# Warnings the libraries emit on every run that no user setting causes or can fix: (category, message regex).
KNOWN_NOISE = (
    # transformers 5 renamed gradient checkpointing; trl and transformers still call the old names internally
    (FutureWarning, r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated and will be removed in v6"),
    # peft looks for the base model's config on the Hub to see if the vocabulary changed; offline it cannot
    (UserWarning, r"Could not find a config file in .* - will assume that the vocabulary was not modified"),
    (UserWarning, r"Unable to fetch remote file due to the following error"),
)


def quiet_known_noise() -> None:
    """Hide ``KNOWN_NOISE`` (by category and message, nothing else) and the ``datasets`` per-step progress bars of
    small bookkeeping (saving, mapping); every other warning still shows."""
    import warnings

    for category, message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def setup_logging(is_main: bool) -> None:
    """One ``[dpo_hub]`` line per stage, printed by the main process only; known library noise hidden."""
    quiet_known_noise()
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[dpo_hub] %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.ERROR)


def wants_cpu() -> bool:
    """CPU when accelerate was told so (``use_cpu: true``/``--cpu``) or no accelerator is visible.

    It must reach the FIRST ``PartialState()``: without ``cpu=True`` the GPU-less torchrun ranks of
    ``cpu_ddp.yaml`` each see a one-process state although their gloo group exists.
    """
    import torch
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    accelerator = getattr(torch, "accelerator", None)
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


def use_all_cores(threads: int | None, state: Any) -> int:
    """Torch CPU threads for this process: every core, split between the local processes.

    ``accelerate launch`` exports ``OMP_NUM_THREADS=1`` (or physical cores / processes), which halves a
    single CPU process on small machines; ``threads`` or ``$DPO_HUB_NUM_THREADS`` override.
    """
    import torch

    if state.device.type != "cpu":
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or state.num_processes
    n = threads or int(os.environ.get("DPO_HUB_NUM_THREADS", 0)) or max(1, len(os.sched_getaffinity(0)) // local)
    torch.set_num_threads(n)
    return n
