"""``dpo.precision: auto`` on a CPU with AVX-512 BF16/AMX: bf16 autocast only where a short probe shows it
faster for this model's matmuls on this machine.

The probe times one layer's worth of the step's matmuls (MLP up and down, a 2,048-wide slice of the LM head;
forward and the input-gradient backward a LoRA step runs, fp32 weights as training keeps them) at the model's
dimensions, fp32 vs bf16 autocast, alternated. Its answer is cached per model shape, CPU, torch version and
thread count in ``$DPO_HUB_CACHE/precision_probe.json``, so a run pays it (< 1 s on GPT-2's shape) once.
``DPO_HUB_CPU_BF16=1|0`` still forces the answer without a probe (``dpo_hub.runtime.cpu_has_bf16``), as does a
precision set in the recipe; on GPUs ``auto`` follows the hardware (``dpo_hub.runtime.resolve_precision``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

from dpo_hub.runtime import CPU_BF16_ENV, cache_dir, resolve_precision

log = logging.getLogger("dpo_hub")
PROBE_FILE = "precision_probe.json"
PROBE_TOKENS = 256  # rows of the probe's matmuls (a step has 2 rows of up to max_length tokens)
PROBE_ROUNDS = 3
BF16_MARGIN = 1.1  # bf16 must be this many times faster: it costs precision, so a tie keeps fp32


def model_shape(model: Any) -> dict[str, int]:
    """Hidden, MLP and vocabulary widths of ``model`` (GPT-2 and Llama-style configs)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    intermediate = (
        getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    )
    return {"hidden": int(hidden), "intermediate": int(intermediate), "vocab": int(config.vocab_size)}


def choose_precision(setting: str, model: Any, use_cpu: bool) -> tuple[str, str, dict | None]:
    """(fp32 | bf16 | fp16, why, the probe's timings or None) for ``dpo.precision`` = ``setting``."""
    precision, why = resolve_precision(setting, use_cpu)
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if setting != "auto" or not use_cpu or precision != "bf16" or forced:
        return precision, why, None
    shape = model_shape(model)
    probe = cached_probe(shape)
    ratio = probe["fp32_s"] / probe["bf16_s"]
    timings = f"fp32 {probe['fp32_s'] * 1e3:.0f} ms vs bf16 {probe['bf16_s'] * 1e3:.0f} ms, {ratio:.2f}x"
    if ratio >= BF16_MARGIN:
        why = f"AVX-512 BF16/AMX and a probe of this model's matmuls ran faster in bf16 ({timings}): autocast"
        return "bf16", why + ", fp32 weights", probe
    why = f"AVX-512 BF16/AMX, but a probe of this model's matmuls was not {BF16_MARGIN}x faster in bf16"
    return "fp32", f"{why} ({timings}); dpo.precision: bf16 forces it", probe


def machine_key(shape: dict[str, int]) -> str:
    """What the probe's answer depends on: the CPU, torch, the threads it runs on and the model's widths."""
    import torch

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dims = "-".join(f"{k}{v}" for k, v in sorted(shape.items()))
    return f"{cpu}|torch {torch.__version__}|{torch.get_num_threads()} threads|{dims}"


def cached_probe(shape: dict[str, int]) -> dict:
    """The probe's timings for ``shape`` on this machine, measured once and kept in the cache folder."""
    path = cache_dir() / PROBE_FILE
    key = machine_key(shape)
    try:
        known = json.loads(path.read_text())
    except FileNotFoundError:
        known = {}
    except (OSError, ValueError) as err:  # unreadable: measured again, and the file rewritten whole
        log.warning("%s unreadable (%s): probing the precision again", path, err)
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key in known:
        return {**known[key], "cached": True}
    probe = {**probe_matmuls(shape), "key": key}
    known[key] = probe
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(known, indent=1) + "\n")
    os.replace(partial, path)  # whole or not at all
    return {**probe, "cached": False}


def probe_matmuls(shape: dict[str, int]) -> dict:
    """Median seconds of one layer's MLP and a head slice, forward + input-gradient backward, fp32 vs bf16."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    hidden, intermediate = shape["hidden"], shape["intermediate"]
    up = torch.randn(intermediate, hidden, generator=generator) / hidden**0.5
    down = torch.randn(hidden, intermediate, generator=generator) / intermediate**0.5
    head = torch.randn(min(2048, shape["vocab"]), hidden, generator=generator) / hidden**0.5
    x = torch.randn(PROBE_TOKENS, hidden, generator=generator)

    def step(bf16: bool) -> float:
        started = time.perf_counter()
        inputs = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = F.linear(F.linear(F.gelu(F.linear(inputs, up)), down), head)
        logits.float().sum().backward()
        return time.perf_counter() - started

    step(False), step(True)  # warm-up: first calls allocate and pick kernels
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(PROBE_ROUNDS):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    return {"fp32_s": statistics.median(times[False]), "bf16_s": statistics.median(times[True])}
