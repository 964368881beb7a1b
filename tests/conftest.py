"""Shared fixtures: an offline environment and one real training run under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["dpo_hub.testing.hub.fixtures"]  # the local_hub and hub_env fixtures the README offers
REPO = Path(__file__).resolve().parents[1]
RECIPE_MODULE = "dpo_hub.recipes.gpt2_ultrafeedback"


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for subprocesses: no Hub, private caches, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ACCELERATE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def run(
    cmd: list[str], env: dict[str, str], timeout: int = 600, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def accelerate_cmd(config: str = "cpu.yaml") -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
    ]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, worker_id) -> tuple[Path, subprocess.CompletedProcess]:
    """The shipped recipe on the embedded default (200 rows), run for real under accelerate launch: once per
    test session, shared by the xdist workers (the first one runs it, the others wait and read it; nothing
    writes to it)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if worker_id != "master" else base) / "trained"  # this session's folder
    shared.mkdir(exist_ok=True)
    out, record = shared / "run", shared / "process.json"
    with FileLock(str(shared / ".lock")):
        if not record.exists():
            proc = run(
                [*accelerate_cmd(), "-m", RECIPE_MODULE, "--output_dir", str(out), "--data.limit", "200"],
                offline_env(shared),
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            record.write_text(json.dumps({"args": proc.args, "stdout": proc.stdout, "stderr": proc.stderr}))
    done = json.loads(record.read_text())
    return out, subprocess.CompletedProcess(done["args"], 0, done["stdout"], done["stderr"])


SMALL_ARGS = [
    "--model", "embedded", "--data.limit", "24", "--dpo.max_steps", "4", "--dpo.max_length", "64",
    "--dpo.learning_rate", "1e-3", "--dpo.logging_steps", "1", "--dpo.save_steps", "2",
]  # fmt: skip
SMALL_RUNS = {  # name: (accelerate config, extra flags); the same effective batch of 2 pairs in every one
    "single": ("cpu.yaml", ["--dpo.per_device_train_batch_size", "2"]),
    "ddp": ("cpu_ddp.yaml", []),
    "fsdp": ("fsdp_cpu.yaml", []),
    # ipo: no shortcut for the eval before training (only sigmoid has one), so it really runs first
    "single_ipo": ("cpu.yaml", ["--dpo.per_device_train_batch_size", "2", "--dpo.loss_type", "ipo"]),
    "ddp_ipo": ("cpu_ddp.yaml", ["--dpo.loss_type", "ipo"]),
}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, worker_id):
    """``small_run(name)``: the shipped recipe on ``SMALL_ARGS`` (4 steps) launched as ``SMALL_RUNS[name]``
    says, once per test session and shared by the xdist workers (as ``trained_run``), each run with its own
    reference cache. Returns (run folder, CompletedProcess); nothing may write to the folder."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "small_runs"

    def get(name: str) -> tuple[Path, subprocess.CompletedProcess]:
        config, extra = SMALL_RUNS[name]
        shared = root / name
        shared.mkdir(parents=True, exist_ok=True)
        out, record = shared / "run", shared / "process.json"
        with FileLock(str(shared / ".lock")):
            if not record.exists():
                env = offline_env(shared, CUDA_VISIBLE_DEVICES="", DPO_HUB_CACHE=str(shared / "cache"))
                command = [*accelerate_cmd(config), "-m", RECIPE_MODULE, "--output_dir", str(out)]
                proc = run([*command, *SMALL_ARGS, *extra], env)
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
                done = {"args": proc.args, "stdout": proc.stdout, "stderr": proc.stderr}
                record.write_text(json.dumps(done))
        done = json.loads(record.read_text())
        return out, subprocess.CompletedProcess(done["args"], 0, done["stdout"], done["stderr"])

    return get


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


USER_DPO_HUB_CACHE = os.environ.get("DPO_HUB_CACHE") or os.path.expanduser(
    "~/.cache/dpo_hub"
)  # before the fixture


@pytest.fixture(autouse=True, scope="session")
def private_dpo_hub_cache(tmp_path_factory):
    """Reference log-probs and downloads go to a folder of this test session, not ~/.cache/dpo_hub."""
    os.environ["DPO_HUB_CACHE"] = str(tmp_path_factory.mktemp("dpo_hub_cache"))


TINY = {  # a trainer on the embedded default that builds in seconds
    "model": "embedded",
    "data.dataset": "embedded",
    "data.limit": 24,
    "data.eval_fraction": 0.25,
    "dpo.max_steps": 2,
    "dpo.logging_steps": 1,
    "dpo.max_length": 64,
    "dpo.per_device_eval_batch_size": 4,
}


@pytest.fixture(scope="module")
def tokenizer():
    from dpo_hub import embedded

    return embedded.load_tokenizer()


def tiny_trainer(tmp_path: Path, tokenizer, **changes):
    """``build_trainer`` of the shipped recipe on ``TINY`` plus ``changes``, checkpoints in ``tmp_path``."""
    from dpo_hub import prepare
    from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
    from dpo_hub.training.run import build_trainer

    recipe = RECIPE.override({**TINY, **changes})
    data = prepare(recipe.data, tokenizer, max_length=64)
    return build_trainer(recipe, tokenizer, data, tmp_path / "ckpt")


def first_batch(trainer):
    """trl's collated batch of the first two train pairs."""
    return trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
