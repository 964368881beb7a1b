"""QLoRA on the CPU: the embedded model's weight memory and the time of a LoRA training step, fp32 vs 4-bit
(NF4) vs 8-bit (bitsandbytes), measured in one process with the three alternating.

Run: python benchmarks/qlora_cpu.py [--rounds 3] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from dpo_hub.config.model import ModelSpec
from dpo_hub.sources.models import load_model
from dpo_hub.training.levers.model import keep_4bit_layout


def build(quantization: str | None):
    model = load_model(ModelSpec(name="embedded", quantization=quantization))
    keep_4bit_layout(model)
    memory = model.get_memory_footprint() / 2**20
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    model = get_peft_model(model, config)
    model.train()
    return model, memory


def step_seconds(model, ids: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    started = time.perf_counter()
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = torch.randint(0, 50257, (4, 128))
    models = {q: build(None if q == "fp32" else q) for q in ("fp32", "4bit", "8bit")}
    times: dict[str, list[float]] = {q: [] for q in models}
    for _ in range(args.rounds):
        for q, (model, _) in models.items():
            times[q].append(step_seconds(model, ids, args.steps))
    base = statistics.median(times["fp32"])
    print("| base | weights MiB | step s (median) | step vs fp32 |\n| --- | --- | --- | --- |")
    for q, (_, memory) in models.items():
        step = statistics.median(times[q])
        print(f"| {q} | {memory:.2f} | {step:.3f} | {step / base:.2f}x |")


if __name__ == "__main__":
    main()
