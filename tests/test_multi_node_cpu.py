"""Two machines on one box: two ``accelerate launch --config_file accelerate_configs/multi_node_cpu.yaml``
commands (``--machine_rank 0`` and ``1``, ``--main_process_ip 127.0.0.1``) form one 2-process job, written
once by machine 0, with the same results as the 2-process single-machine run (``cpu_ddp.yaml``)."""

from __future__ import annotations

import socket
import subprocess

import pytest
from conftest import RECIPE_MODULE, REPO, accelerate_cmd, offline_env, read_metrics, run

ARGS = ["--model", "embedded", "--data.limit", "24", "--dpo.max_steps", "4", "--dpo.max_length", "64"]
ARGS += ["--dpo.learning_rate", "1e-3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.scale_out  # 3 launches, ~1-3 min on 2 shared cores: outside CI (pytest -m scale_out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi_node")
    env = offline_env(tmp, CUDA_VISIBLE_DEVICES="")
    out = tmp / "two_machines"
    flags = ["--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    commands = [
        [*accelerate_cmd("multi_node_cpu.yaml"), "--machine_rank", str(rank), *flags, "-m", RECIPE_MODULE]
        + ["--output_dir", str(out), *ARGS]
        for rank in (1, 0)
    ]
    second = subprocess.Popen(
        commands[0], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    main = run(commands[1], env)
    second_out, second_err = second.communicate(timeout=300)
    assert main.returncode == 0, main.stdout[-3000:] + main.stderr[-3000:]
    assert second.returncode == 0, second_out[-3000:] + second_err[-3000:]
    single = tmp / "one_machine"
    ddp = run([*accelerate_cmd("cpu_ddp.yaml"), "-m", RECIPE_MODULE, "--output_dir", str(single), *ARGS], env)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    return {"two": (out, main.stdout, second_out), "one": (single, ddp.stdout)}


def test_one_job_over_two_machines_written_once(runs):
    out, main_stdout, second_stdout = runs["two"]
    metrics = read_metrics(out)
    assert metrics["distributed"] == {"type": "MULTI_CPU", "processes": 2, "machines": 2, "sharded": False}
    assert "rank 0 of world size 2 ready" in main_stdout and "rank 1 of world size 2 ready" in second_stdout
    assert main_stdout.count("[dpo_hub] saved") == 1 and "[dpo_hub] saved" not in second_stdout
    assert len(list(out.glob("adapter_model.safetensors"))) == 1


def test_same_results_as_two_processes_on_one_machine(runs):
    two, one = read_metrics(runs["two"][0]), read_metrics(runs["one"][0])
    assert one["distributed"]["machines"] == 1 and one["distributed"]["processes"] == 2
    assert two["train"]["global_step"] == one["train"]["global_step"] == 4
    assert two["eval_after"] == one["eval_after"]  # same ranks, same gloo reductions: the same numbers
    assert two["train"]["train_loss"] == one["train"]["train_loss"]
