"""Frozen-base matmul levers at training row counts, on this machine: the pre-screen for issue 23's
"bf16-stored weights" and "int8 weight-only" levers.

Run:  python benchmarks/base_matmul_levers.py [--rows 1024] [--repeats 7]
      (int8 needs torchao: pip install --target DIR --no-deps torchao==0.18.0; PYTHONPATH=DIR)

One frozen ``nn.Linear`` of each SmolLM2-360M shape (q/o 960x960, MLP up 960x2560, down 2560x960) carries a
trainable rank-8 LoRA (fp32), as a step runs it: forward, then backward to the input and the LoRA weights (the
frozen weight gets no gradient). Variants, alternated round by round, median of ``--repeats``:
``fp32`` (fp32 weights and activations), ``bf16_autocast`` (fp32 weights under CPU bf16 autocast: what
``precision: bf16`` runs), ``bf16_weights`` (the frozen weight stored in bf16, same autocast: ``model.dtype:
bfloat16``), ``int8_weights`` (torchao ``Int8WeightOnlyConfig`` on the frozen weight, fp32 activations) and
``int8_weights_autocast``. Prints milliseconds per forward+backward summed over the four shapes and ratios
to ``bf16_autocast``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

SHAPES = [(960, 960), (960, 960), (960, 2560), (2560, 960)]
RANK = 8


class LoraLinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.a = torch.nn.Parameter(torch.randn(RANK, base.in_features) * 0.01)
        self.b = torch.nn.Parameter(torch.randn(base.out_features, RANK) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.a.t()) @ self.b.t()


def variants(rows: int) -> dict:
    torch.manual_seed(0)
    layers = [LoraLinear(torch.nn.Linear(i, o)) for i, o in SHAPES]
    out = {"fp32": (layers, False), "bf16_autocast": (layers, True)}
    bf16 = copy.deepcopy(layers)
    for layer in bf16:
        layer.base.to(torch.bfloat16)
    out["bf16_weights"] = (bf16, True)
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        print("torchao not importable: int8 variants skipped")
        return out
    int8 = copy.deepcopy(layers)
    for layer in int8:
        quantize_(layer.base, Int8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, torch.nn.Linear))
    out["int8_weights"] = (int8, False)
    out["int8_weights_autocast"] = (int8, True)
    return out


def one_pass(layers: list, autocast: bool, inputs: list[torch.Tensor]) -> float:
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for layer, x in zip(layers, inputs, strict=True):
            x = x.detach().requires_grad_(True)
            layer(x).float().square().mean().backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024, help="tokens in a step's forward (batch x length)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    inputs = [torch.randn(args.rows, i) for i, _ in SHAPES]
    runs = variants(args.rows)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for layers, autocast in runs.values():  # warm-up (and a first check that each variant runs)
        one_pass(layers, autocast, inputs)
    for round_ in range(args.repeats):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            times[name].append(one_pass(*runs[name], inputs))
    ref = statistics.median(times["bf16_autocast"])
    print(f"rows {args.rows}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:24s} {median * 1e3:8.1f} ms   {ref / median:5.2f}x vs bf16_autocast")


if __name__ == "__main__":
    main()
