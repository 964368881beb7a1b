"""Resume under FSDP2 on the CPU: a 2-rank ``fsdp_cpu.yaml`` run killed after its checkpoint of step 2
(SIGKILL to the launcher and both ranks, as a crash or a lost machine does) and started again resumes from
that checkpoint, with the sharded optimizer state, and ends where the uninterrupted run
(``small_run("fsdp")``, the same recipe) ends.

Tolerance: the resumed steps run the same fp32 ops on the same pairs as the uninterrupted run, so they agree
to float noise (measured: identical losses, adapter weights within ~1e-9); the bounds are 1e-6 on eval metrics
and per-step losses and 1e-6 on adapter weights. A resume that drops Adam's moments or the learning-rate
schedule moves the step-3 update by ~1e-3 and fails them.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import psutil
import pytest
import torch
from conftest import RECIPE_MODULE, REPO, SMALL_ARGS, accelerate_cmd, offline_env, read_metrics, run
from safetensors.torch import load_file

from dpo_hub.training.checkpoints import MARKER, folder_for


def test_killed_fsdp_run_resumes_from_its_sharded_checkpoint(tmp_path, small_run):
    out = tmp_path / "run"
    env = offline_env(tmp_path, CUDA_VISIBLE_DEVICES="", DPO_HUB_CACHE=str(tmp_path / "cache"))
    command = [*accelerate_cmd("fsdp_cpu.yaml"), "-m", RECIPE_MODULE, "--output_dir", str(out), *SMALL_ARGS]
    saves = folder_for(out)
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (saves / "checkpoint-2" / MARKER).exists():
        assert proc.poll() is None, (
            "the run ended before it could be killed: " + proc.communicate()[1][-3000:]
        )
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    launcher = psutil.Process(proc.pid)
    for process in [launcher, *launcher.children(recursive=True)]:  # torchrun gives the ranks own sessions
        process.kill()
    proc.communicate(timeout=60)
    assert not out.exists()
    for later in (p for p in saves.glob("checkpoint-*") if p.name != "checkpoint-2"):
        shutil.rmtree(later)  # killed right after step 2's checkpoint, whatever the machine's speed
    sharded = {p.name for p in (saves / "checkpoint-2").iterdir()}
    assert "adapter_model.safetensors" in sharded and any("optimizer" in name for name in sharded), sharded

    resumed = run(command, env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    mine, theirs = read_metrics(out), read_metrics(small_run("fsdp")[0])
    assert mine["distributed"]["type"] == "FSDP" and mine["distributed"]["sharded"] is True
    assert mine["train"]["global_step"] == theirs["train"]["global_step"] == 4
    assert mine["train"]["resumed_at_step"] == 2
    for key, value in theirs["eval_after"].items():
        assert mine["eval_after"][key] == pytest.approx(value, abs=1e-6), key
    losses = [{e["step"]: e["loss"] for e in m["log_history"] if "loss" in e} for m in (mine, theirs)]
    resumed_steps = {step: losses[0][step] for step in (3, 4)}  # the log before step 3 is the checkpoint's
    assert resumed_steps == pytest.approx({step: losses[1][step] for step in (3, 4)}, abs=1e-6)
    a, b = (load_file(d / "adapter_model.safetensors") for d in (out, small_run("fsdp")[0]))
    assert a.keys() == b.keys()
    largest = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert largest < 1e-6, largest
    moved = max(float(t.abs().max()) for k, t in a.items() if "lora_B" in k)
    assert moved > 1e-4  # trained: lora_B starts at zero
    print(f"FSDP resume from step 2: eval {mine['eval_after']}; largest adapter difference {largest:.2e}")
    assert not saves.exists() and torch.isfinite(torch.tensor(list(losses[0].values()))).all()
