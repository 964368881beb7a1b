"""Process-level setup for a run: which device, how many CPU threads, logging on the main process only.

Importing this module imports bitsandbytes (when installed) with its Hub-kernel messages kept aside, before
peft imports it: see :func:`import_bitsandbytes`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import itertools
import logging
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

log = logging.getLogger("dpo_hub")


# Warnings the libraries emit on every run that no user setting causes or can fix: (category, message regex).
KNOWN_NOISE = (
    # transformers 5 renamed gradient checkpointing; trl and transformers still call the old names internally
    (FutureWarning, r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated and will be removed in v6"),
    # peft looks for the base model's config on the Hub to see if the vocabulary changed; offline it cannot
    (UserWarning, r"Could not find a config file in .* - will assume that the vocabulary was not modified"),
    (UserWarning, r"Unable to fetch remote file due to the following error"),
    # deepspeed 0.19's ZeRO (its CPU accelerator, deepspeed_zero2_cpu.yaml) calls torch's deprecated name
    (FutureWarning, r"`torch.distributed.all_gather_into_tensor` is deprecated"),
)


def quiet_known_noise() -> None:
    """Hide ``KNOWN_NOISE`` (by category and message, nothing else) and the ``datasets`` per-step progress
    bars of small bookkeeping (saving, mapping); every other warning still shows."""
    import warnings

    for category, message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


@contextlib.contextmanager
def process_settings_restored() -> Iterator[None]:
    """The process-wide settings a run changes (torch's CPU threads, warning filters, ``datasets``' progress
    bars) restored when the block exits, so code run after ``train()`` in the same process is unaffected."""
    import warnings

    import datasets
    import torch

    threads, bars_off = torch.get_num_threads(), datasets.are_progress_bars_disabled()
    with warnings.catch_warnings():
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            if not bars_off:
                datasets.enable_progress_bars()


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
    n = (
        threads
        or int(os.environ.get("DPO_HUB_NUM_THREADS", 0))
        or max(1, len(os.sched_getaffinity(0)) // local)
    )
    torch.set_num_threads(n)
    return n


def cache_dir() -> Path:
    """Where stand-ins are kept: ``$DPO_HUB_CACHE``, else ``~/.cache/dpo_hub``."""
    return Path(os.environ.get("DPO_HUB_CACHE") or "~/.cache/dpo_hub").expanduser()


CPU_BF16_ENV = "DPO_HUB_CPU_BF16"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); without, torch emulates it, slower.

    ``DPO_HUB_CPU_BF16=1`` or ``0`` forces the answer (and so what ``precision: auto`` picks on a CPU), e.g.
    to run the tests as on a CPU with or without bf16; unset or empty: read from ``/proc/cpuinfo``. The
    variable is read on every call (only the ``/proc/cpuinfo`` reading is cached).
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("1", "0"):
        return forced == "1"
    if forced:
        raise ValueError(
            f"{CPU_BF16_ENV}={forced!r}: expected 1 (bf16), 0 (no bf16) or unset (detect from the CPU)"
        )
    return _cpuinfo_has_bf16()


@functools.cache
def _cpuinfo_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def missing_on_path(*tools: str) -> list[str]:
    """The ``tools`` (commands, e.g. ``$CXX`` with its flags) whose program is not on ``PATH``."""
    import shutil

    return [tool for tool in tools if shutil.which(tool.split()[0]) is None]


def resolve_precision(precision: str, use_cpu: bool) -> tuple[str, str]:
    """``dpo.precision`` -> (fp32 | bf16 | fp16, why); ``auto`` picks bf16 autocast where the hardware has it.

    LoRA weights and optimizer state stay fp32 in every case: bf16 only changes the matmuls (autocast).
    """
    import torch

    if precision != "auto":
        return precision, "set by dpo.precision"
    if use_cpu:
        forced = os.environ.get(CPU_BF16_ENV, "").strip()
        forced = f" ({CPU_BF16_ENV}={forced})" if forced else ""
        if cpu_has_bf16():
            return "bf16", f"this CPU has AVX-512 BF16/AMX{forced}: bf16 autocast, fp32 weights"
        return "fp32", f"this CPU has no AVX-512 BF16/AMX{forced}, where bf16 is emulated and slower"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16", f"{torch.cuda.get_device_name()} computes bf16: autocast, fp32 weights"
    return "fp32", "this accelerator has no bf16"


def on_main(state: Any, work: Any) -> Any:
    """``work()`` on the main process; every rank gets its result, or raises the ``DpoHubError`` it raised
    (marked ``shown_elsewhere`` on the other ranks: the main process prints it, they only exit alike)."""
    from dpo_hub.errors import DpoHubError

    result: list[Any] = [None, None]
    if state.is_main_process:
        try:
            result[0] = work()
        except DpoHubError as err:
            if state.num_processes == 1:
                raise
            result[1] = err
    if state.num_processes > 1:  # the others wait here, not at a barrier the main never reaches
        result = _from_main(state, result)
    if result[1] is not None:
        result[1].on_every_rank = True  # the ranks leave together once the main has said it (cli.launch)
        if not state.is_main_process:
            result[1].shown_elsewhere = True
        raise result[1]
    return result[0]


_ON_MAIN_CALLS = itertools.count()  # every rank calls on_main in the same order: one store key per call


def _from_main(state: Any, result: list[Any]) -> list[Any]:
    """The main process's ``result`` on every rank, through the c10d store of the process group.

    Not a gloo ``broadcast_object_list``: its work item holds Python-owned tensors, which gloo's worker
    thread may still be freeing when a rank exits right after it (a data error found by the main); freeing
    them needs the GIL, and during interpreter finalization that aborts the process (SIGABRT, ``terminate
    called without an active exception``)."""
    import pickle

    from dpo_hub import upstream

    store = upstream.get(upstream.TORCH_DEFAULT_STORE)()
    key = f"dpo_hub/on_main/{next(_ON_MAIN_CALLS)}"
    if state.is_main_process:
        store.set(key, pickle.dumps(result))
        return result
    return pickle.loads(store.get(key))


# bitsandbytes 0.50 on a CPU with AVX-512 BF16, as it is imported (backends/cpu/ops.py: ``if
# has_avx512bf16(): get_kernel("kernels-community/quantization-bitsandbytes")``), asks the Hub for a faster
# 4-bit CPU matmul. Offline (or without the ``kernels`` package) that fails and it logs a warning, plus one
# from ``kernels`` when HF_HUB_OFFLINE is set; its own CPU kernel then runs, correctly. No bitsandbytes
# setting or variable skips the request (``kernels``' LOCAL_KERNELS=repo=path serves it from local files, if
# a user has them), and peft imports bitsandbytes in every run once it is installed. So dpo_hub imports it
# first, for these versions only, and keeps those messages for the log of a run that quantizes; errors go
# where they would.
BITSANDBYTES_HUB_KERNEL_VERSIONS = ((0, 50), (0, 51))  # [first, last) minor that behave as described
BITSANDBYTES_HUB_KERNEL_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels")  # the request's; others show
BITSANDBYTES_IMPORT_NOTES: list[str] = []  # what those logged below ERROR while bitsandbytes was imported


class _KeepBelowError(logging.Handler):
    """Keeps the messages of records below ERROR; hands ERROR and above on as if it were not there."""

    def __init__(self, kept: list[str]) -> None:
        super().__init__()
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            logging.getLogger().handle(record)
        else:
            self.kept.append(" ".join(record.getMessage().split()))


def import_bitsandbytes() -> None:
    """Import bitsandbytes (when installed, in the versions of ``BITSANDBYTES_HUB_KERNEL_VERSIONS``, and not
    yet imported) with the warnings of its CPU Hub-kernel request kept in ``BITSANDBYTES_IMPORT_NOTES``; what
    its other loggers say shows as usual."""
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    try:
        minor = tuple(int(part) for part in version("bitsandbytes").split(".")[:2])
    except ValueError:  # a version string this does not know: its messages show as they are
        return
    first, last = BITSANDBYTES_HUB_KERNEL_VERSIONS
    if not first <= minor < last:
        return
    keep = _KeepBelowError(BITSANDBYTES_IMPORT_NOTES)
    loggers = [logging.getLogger(name) for name in BITSANDBYTES_HUB_KERNEL_LOGGERS]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(keep)
        logger.propagate = False
    try:
        importlib.import_module("bitsandbytes")
    finally:
        for logger, was in zip(loggers, propagate):
            logger.removeHandler(keep)
            logger.propagate = was


import_bitsandbytes()
