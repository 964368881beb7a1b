"""Wall time of the recipe on the embedded default: 1 CPU process vs 2 DDP ranks (cpu_ddp.yaml), one run each.

Run: python benchmarks/ddp_vs_single.py [--limit 200]
Prints each run's wall time, effective batch and eval metrics, then the ratio 2-process / 1-process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(config: str, out: Path, limit: int) -> tuple[float, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
        "-m",
        "dpo_hub.recipes.gpt2_ultrafeedback",
        "--output_dir",
        str(out),
        "--data.limit",
        str(limit),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started, json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=400)
    limit = parser.parse_args().limit
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            name: launch(config, Path(tmp) / name, limit)
            for name, config in (("1 process", "cpu.yaml"), ("2 processes", "cpu_ddp.yaml"))
        }
    for name, (seconds, metrics) in results.items():
        after = metrics["eval_after"]
        print(
            f"{name:12s} wall {seconds:6.1f} s  train {metrics['train']['train_runtime']:6.1f} s  "
            f"effective batch {metrics['effective_batch_size']}  eval loss {after['eval_loss']:.4f}  "
            f"reward acc {after['eval_rewards/accuracies']:.2f}"
        )
    ratio = results["2 processes"][0] / results["1 process"][0]
    print(f"ratio wall(2 processes) / wall(1 process): {ratio:.2f}")


if __name__ == "__main__":
    main()
