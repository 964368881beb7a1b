"""Two machines on one box: two ``accelerate launch --config_file accelerate_configs/multi_node_cpu.yaml``
commands (``--machine_rank 0`` and ``1``, ``--main_process_ip 127.0.0.1``) form one 2-process job, written
once by machine 0, with the same results as the 2-process single-machine run (``cpu_ddp.yaml``, the shared
``small_run("ddp")``)."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
from conftest import RECIPE_MODULE, REPO, SMALL_ARGS, accelerate_cmd, offline_env, read_metrics, run


def _free_port() -> int:
    """A port no process listens on now (the OS picks it), so parallel test workers do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory, small_run):
    tmp = tmp_path_factory.mktemp("multi_node")
    # one process per "machine" would take every core (threads = cores / local processes): give each rank the
    # threads of a cpu_ddp rank, so both runs sum in the same order and their numbers can be equal
    threads = re.search(r"(\d+) CPU thread\(s\) each", small_run("ddp")[1].stdout).group(1)
    env = offline_env(
        tmp, CUDA_VISIBLE_DEVICES="", DPO_HUB_CACHE=str(tmp / "cache"), DPO_HUB_NUM_THREADS=threads
    )
    out = tmp / "two_machines"
    flags = ["--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    second, main = (
        [*accelerate_cmd("multi_node_cpu.yaml"), "--machine_rank", str(rank), *flags, "-m", RECIPE_MODULE]
        + ["--output_dir", str(out), *SMALL_ARGS]
        for rank in (1, 0)
    )
    logs = [tmp / "machine_1.stdout", tmp / "machine_1.stderr"]
    with logs[0].open("w") as stdout, logs[1].open("w") as stderr:  # files: a pipe nobody reads can fill up
        machine_1 = subprocess.Popen(second, env=env, cwd=REPO, stdout=stdout, stderr=stderr)
        try:
            machine_0 = run(main, env, timeout=300)
        except subprocess.TimeoutExpired as hung:  # keep what it printed: where it was when it hung
            machine_0 = subprocess.CompletedProcess(
                main, "killed after 300 s", *map(_text, (hung.stdout, hung.stderr))
            )
        try:
            machine_1.wait(timeout=120)
        except subprocess.TimeoutExpired:  # machine 0 failed or hung: do not leave machine 1 waiting
            machine_1.kill()
            machine_1.wait()
    out_1, err_1 = (log.read_text() for log in logs)
    assert machine_0.returncode == 0 and machine_1.returncode == 0, (
        f"machine 0 (exit {machine_0.returncode}):\n{machine_0.stdout[-2000:]}\n{machine_0.stderr[-2000:]}\n"
        f"machine 1 (exit {machine_1.returncode}):\n{out_1[-2000:]}\n{err_1[-2000:]}"
    )
    assert f"2 process(es), {threads} CPU thread(s) each" in machine_0.stdout
    return out, machine_0.stdout, out_1


def test_one_job_over_two_machines_written_once(two_machines):
    out, main_stdout, second_stdout = two_machines
    metrics = read_metrics(out)
    where = {k: metrics["distributed"][k] for k in ("type", "processes", "machines", "sharded")}
    assert where == {"type": "MULTI_CPU", "processes": 2, "machines": 2, "sharded": False}
    assert "rank 0 of world size 2 ready" in main_stdout and "rank 1 of world size 2 ready" in second_stdout
    assert main_stdout.count("[dpo_hub] saved") == 1 and "[dpo_hub] saved" not in second_stdout
    assert not [p for p in out.parent.iterdir() if p.name.endswith((".incomplete", ".checkpoints"))]
    assert len(list(out.glob("adapter_model.safetensors"))) == 1


def test_same_results_as_two_processes_on_one_machine(two_machines, small_run):
    two, one = read_metrics(two_machines[0]), read_metrics(small_run("ddp")[0])
    assert one["distributed"]["machines"] == 1 and one["distributed"]["processes"] == 2
    assert two["train"]["global_step"] == one["train"]["global_step"] == 4
    # same ranks, same pairs, same threads: equal up to the run-to-run noise of 2-rank gloo runs, which was
    # measured at up to 7e-6 on eval rewards and 1e-6 on eval loss (the same cpu_ddp command run twice)
    for key, value in one["eval_after"].items():
        assert two["eval_after"][key] == pytest.approx(value, abs=2e-5), key
    assert two["train"]["train_loss"] == pytest.approx(one["train"]["train_loss"], abs=1e-5)
    losses = [[e["loss"] for e in m["log_history"] if "loss" in e] for m in (two, one)]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], abs=1e-5)
