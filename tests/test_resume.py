"""Resume after a real SIGKILL or Ctrl-C: the resumed run ends where an uninterrupted one does.

Runs are real subprocesses of the shipped recipe on the embedded default (dropout on, so the restored
RNG state matters too). Tolerance: final adapter weights within 1e-6 and eval metrics within 1e-5 of
the uninterrupted run (float noise of re-running the same ops); every per-step train loss after the
resume point equal to the uninterrupted run's within 1e-4 (trl logs losses rounded), which is what
the same data order gives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import RECIPE_MODULE, REPO, offline_env, read_metrics, run
from safetensors.torch import load_file

from dpo_hub.runtime import cpu_has_bf16
from dpo_hub.training.checkpoints import MARKER, folder_for

ARGS = [
    "--data.limit",
    "60",
    "--dpo.save_steps",
    "10",
    "--dpo.logging_steps",
    "1",
    "--generation.max_new_tokens",
    "4",
]


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", RECIPE_MODULE, "--output_dir", str(out), *ARGS, *extra]


def start_until(out: Path, env: dict, step: int, sig: int) -> subprocess.CompletedProcess:
    """Start a run, wait until checkpoint-``step`` is complete, then send ``sig``."""
    marker = folder_for(out) / f"checkpoint-{step}" / MARKER
    proc = subprocess.Popen(
        command(out), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, (
            "the run ended before it could be interrupted: " + proc.communicate()[1][-2000:]
        )
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def own_cache(tmp: Path, **env: str) -> dict:
    """A reference cache of these runs only: in bf16 a pair's cached value depends (by rounding) on the batch
    it was computed in, so values left by other tests would make runs differ by more than float noise. The
    precision is the CPU's answer without the timing probe, which a loaded machine could answer differently
    for the reference run and the interrupted one."""
    return offline_env(
        tmp,
        DPO_HUB_CACHE=str(tmp / "reference_cache"),
        **{"DPO_HUB_CPU_BF16": "1" if cpu_has_bf16() else "0", **env},
    )


def losses(metrics: dict) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in metrics["log_history"] if "loss" in e}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    proc = run(command(tmp / "run"), own_cache(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not folder_for(tmp / "run").exists(), "a finished run leaves no checkpoints behind"
    return tmp / "run"


def segment_runtime(stdout: str) -> float:
    """transformers' own train_runtime of one start (the dict it prints at the end of training)."""
    line = [x for x in stdout.splitlines() if x.startswith("{'train_runtime'")][-1]
    return float(eval(line)["train_runtime"])  # noqa: S307 (a dict of numbers printed by transformers)


def assert_whole_run_totals(mine: dict, theirs: dict, from_step: int, last_start_s: float) -> None:
    """Class 8 of issue 22: a resumed run reports totals over the whole run, not over its last start."""
    a, b = mine["train"], theirs["train"]
    assert a["global_step"] == b["global_step"] and a["resumed_at_step"] == from_step
    assert a["tokens_seen"] == b["tokens_seen"], "tokens of the first start are counted"
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5), "the mean over every step"
    assert a["train_runtime"] > last_start_s, "the first start's training time is included"
    tokens = [{e["step"]: e["num_tokens"] for e in m["log_history"] if "loss" in e} for m in (mine, theirs)]
    assert tokens[0] == tokens[1], "log_history's num_tokens continues after the resume"


def assert_same_run(resumed: Path, reference: Path, from_step: int) -> None:
    mine, theirs = read_metrics(resumed), read_metrics(reference)
    assert mine["train"]["global_step"] == theirs["train"]["global_step"] > from_step
    for key, value in theirs["eval_after"].items():
        assert mine["eval_after"][key] == pytest.approx(value, abs=1e-5), key
    assert mine["eval_before"] == theirs["eval_before"], (
        "the eval before training is kept from the first start"
    )
    after = {s: v for s, v in losses(mine).items() if s > from_step}
    assert after and after == pytest.approx({s: losses(theirs)[s] for s in after}, abs=1e-4), (
        "same data order"
    )
    a, b = (
        load_file(resumed / "adapter_model.safetensors"),
        load_file(reference / "adapter_model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    largest = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(
        f"resumed from step {from_step}: steps {mine['train']['global_step']} vs "
        f"{theirs['train']['global_step']}; eval {mine['eval_after']} vs {theirs['eval_after']}; largest "
        f"adapter weight difference {largest:.2e}"
    )


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, reference):
    out, env = tmp_path / "run", own_cache(tmp_path)
    killed = start_until(out, env, 30, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    saves = folder_for(out)
    newest = max(
        (p for p in saves.iterdir() if p.name.startswith("checkpoint-")), key=lambda p: int(p.name[11:])
    )
    assert (newest / MARKER).exists()

    other = run(command(out, "--dpo.beta", "0.2"), env)  # another recipe must not pick these checkpoints up
    assert (
        other.returncode == 2  # a recipe refused before anything is written
        and "holds checkpoints of recipe" in other.stderr
        and "Traceback" not in other.stderr
    )
    assert not out.exists() and (newest / MARKER).exists()

    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damage the newest checkpoint on purpose
    resumed = run(command(out), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipping checkpoint {newest.name}: adapter_model.safetensors is damaged" in resumed.stdout
    assert "resuming from" in resumed.stdout and f"checkpoint-{int(newest.name[11:]) - 10}" in resumed.stdout
    assert_same_run(out, reference, int(newest.name[11:]) - 10)
    assert_whole_run_totals(
        read_metrics(out),
        read_metrics(reference),
        int(newest.name[11:]) - 10,
        segment_runtime(resumed.stdout),
    )
    assert not saves.exists()


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path, reference):
    out, env = tmp_path / "run", own_cache(tmp_path)
    stopped = start_until(out, env, 10, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("error: interrupted at step ") and "Run the same command again to resume" in line
    assert "Traceback" not in stopped.stderr and not out.exists()
    step = int(line.split("interrupted at step ")[1].split(":")[0])
    assert (folder_for(out) / f"checkpoint-{step}" / MARKER).exists(), (
        "Ctrl-C writes a checkpoint of that step"
    )
    resumed = run(command(out), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(out, reference, step)
    assert_whole_run_totals(read_metrics(out), read_metrics(reference), step, segment_runtime(resumed.stdout))
    assert (
        json.loads((out / "metrics.json").read_text())["fingerprint"]
        == read_metrics(reference)["fingerprint"]
    )


def test_a_kill_after_the_last_step_resumes_without_training_another(tmp_path):
    """The checkpoint of the last step is complete but the run died before its files were written: the rerun
    trains nothing (transformers would train one step more: global_step 3 of max_steps 2), and reports the
    whole run's totals and the same weights as an uninterrupted run."""
    short = ["--dpo.max_steps", "2", "--data.limit", "24", "--generation.max_new_tokens", "2"]
    env = own_cache(tmp_path, DPO_HUB_CPU_BF16="1")  # the first start runs in bf16 ...
    whole = run([*command(tmp_path / "whole"), *short], env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "run"
    marker = folder_for(out) / "checkpoint-2" / MARKER
    proc = subprocess.Popen(
        [*command(out), *short], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    assert not out.exists()
    resumed = run([*command(out), *short], {**env, "DPO_HUB_CPU_BF16": "0"})  # ... the machine now says fp32
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-2 is the run's last step: nothing left to train" in resumed.stdout
    mine, theirs = read_metrics(out), read_metrics(tmp_path / "whole")
    assert mine["precision"]["resolved"] == "bf16", "a resume continues in the first start's precision"
    assert mine["precision"]["why"].startswith("as the run's first start"), mine["precision"]
    assert mine["train"]["global_step"] == 2 == theirs["train"]["global_step"]
    assert_whole_run_totals(mine, theirs, 2, 0.0)
    a, b = (
        load_file(out / "adapter_model.safetensors"),
        load_file(tmp_path / "whole" / "adapter_model.safetensors"),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
