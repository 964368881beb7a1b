"""The scale-out paths on real GPUs, one table: single GPU, QLoRA 4-bit, and with 2+ GPUs DDP and FSDP2.

Run on a machine with 1+ NVIDIA GPUs (about 10 minutes at most; each run has a time limit):

    python benchmarks/gpu_check.py            # gpt2 when the Hub is reachable, else the embedded model
    python benchmarks/gpu_check.py --model embedded --limit 200 --steps 30

Each row is one real ``accelerate launch`` of ``dpo_hub.recipes.gpt2_ultrafeedback`` with a shipped config;
the table shows what metrics.json recorded (distributed type, processes, sharded, quantization, resolved
precision, eval loss before -> after, reward accuracy), the wall time and the peak memory each GPU reached
(nvidia-smi, sampled every 0.5 s) and each rank's ``torch.cuda.max_memory_allocated`` (metrics.json). A run
that fails shows its exit code and last error line instead. Without a GPU it stops with a message: the CPU
paths are covered by the tests (test_fsdp_cpu, test_qlora_cpu, test_multi_node_cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 150  # per run: 4 runs stay within 10 minutes


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class PeakMemory:
    """Highest ``memory.used`` (MiB) per GPU while the block runs, sampled with nvidia-smi."""

    def __enter__(self) -> PeakMemory:
        self.peak: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]
        while not self.stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True).stdout
            for line in out.splitlines():
                index, used = (int(x) for x in line.split(","))
                self.peak[index] = max(self.peak.get(index, 0), used)
            self.stop.wait(0.5)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def launch(config: str, flags: list[str], out: Path, args: argparse.Namespace) -> dict:
    config_file = str(REPO / "accelerate_configs" / config)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file]
    cmd += ["-m", "dpo_hub.recipes.gpt2_ultrafeedback", "--output_dir", str(out), "--model", args.model]
    cmd += ["--data.limit", str(args.limit), "--dpo.max_steps", str(args.steps), *flags]
    started = time.perf_counter()
    with PeakMemory() as memory:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT_S, cwd=REPO)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            code, stderr = "timeout", str(err.stderr or "")
    row = {"wall_s": round(time.perf_counter() - started, 1), "peak_mib": memory.peak, "exit": code}
    if code != 0:
        errors = [line for line in stderr.splitlines() if line.startswith("error:") or "Error" in line]
        row["error"] = (errors or stderr.splitlines()[-1:] or ["?"])[-1][:160]
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    row.update(
        distributed=metrics.get("distributed"),
        quantization=metrics.get("quantization"),
        precision=(metrics.get("precision") or {}).get("resolved"),
        eval_before=metrics["eval_before"].get("eval_loss"),
        eval_after=metrics["eval_after"].get("eval_loss"),
        accuracy=metrics["eval_after"].get("eval_rewards/accuracies"),
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto: gpt2 from the Hub, else the embedded model")
    parser.add_argument("--limit", type=int, default=400, help="preference pairs (data.limit)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (dpo.max_steps)")
    args = parser.parse_args()
    gpus = gpu_count()
    if gpus == 0:
        print("gpu_check: no NVIDIA GPU visible (nvidia-smi); run it on a GPU machine", file=sys.stderr)
        return 2
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # hidden GPUs would send every run to the CPU
        del os.environ["CUDA_VISIBLE_DEVICES"]
    runs = [
        ("single GPU", "single_gpu.yaml", []),
        ("QLoRA 4-bit", "single_gpu.yaml", ["--model.quantization", "4bit"]),
    ]
    if gpus >= 2:
        runs += [("DDP", "multi_gpu.yaml", []), ("FSDP2", "fsdp.yaml", [])]  # 2 processes each
    else:
        print(f"gpu_check: {gpus} GPU: DDP and FSDP need 2+, skipped", flush=True)
    columns = ["run", "config", "exit", "distributed", "quant", "precision", "eval loss", "acc", "wall s"]
    columns += ["peak MiB/GPU (nvidia-smi)", "peak MB/rank (torch)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, flags in runs:
            print(f"gpu_check: {name} ({config}) ...", flush=True)
            row = launch(config, flags, Path(tmp) / name.replace(" ", "_"), args)
            dist = row.get("distributed") or {}
            where = f"{dist.get('type')} x{dist.get('processes')}" + (" sharded" * bool(dist.get("sharded")))
            ok = row["exit"] == 0
            loss = f"{row.get('eval_before')} -> {row.get('eval_after')}" if ok else row["error"]
            peak = ", ".join(f"{i}: {m}" for i, m in sorted(row["peak_mib"].items()))
            ranks = " / ".join(f"{mb:.0f}" for mb in dist.get("peak_memory_mb") or []) or "-"
            lines.append(
                f"| {name} | {config} | {row['exit']} | {where if ok else '-'} | "
                f"{row.get('quantization')} | {row.get('precision')} | {loss} | {row.get('accuracy')} | "
                f"{row['wall_s']} | {peak} | {ranks} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
