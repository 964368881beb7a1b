"""``dpo-hub launch``: accelerate's own launcher in dpo_hub's process, with one-line errors and the worker's
exit code.

Real launches of the embedded default (accelerate's simple launcher and, with ``cpu_ddp.yaml``, torchrun):
the worker's one line is all a failure prints, its exit code is the command's, and nothing is created.
Failures of the launch itself (config file, module, arguments) are one line and exit 2 before any worker
starts; they run in this process through ``dpo_hub.cli.main``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import RECIPE_MODULE, REPO, offline_env, run
from test_cli_errors import EMBEDDED, Live, assert_one_line

from dpo_hub.cli.accelerate_config import _launch_args
from dpo_hub.cli.main import main
from dpo_hub.training.checkpoints import MARKER, folder_for

CPU, DDP = (str(REPO / "accelerate_configs" / name) for name in ("cpu.yaml", "cpu_ddp.yaml"))
UNKNOWN_KEY = "error: command line: unknown recipe key 'dpo.bta'"
EMPTY_FILE = "error: EMPTY: the file is empty"
UNKNOWN_CONFIG_KEY = "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_procesess: 2\n"


def dpo_hub_launch(*argv: str) -> list[str]:
    return [sys.executable, "-m", "dpo_hub", "launch", *argv]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "hf_home" not in p.parts}


# ---- a failed worker: its one line and its exit code ------------------------------------------------------
@pytest.mark.parametrize(
    "config, argv, code, starts",
    [
        (CPU, ["--dpo.bta", "0.1"], 2, UNKNOWN_KEY),  # bad recipe key: 2
        (CPU, ["--data.kind", "preferences", "--data.dataset", "EMPTY"], 1, EMPTY_FILE),  # data: 1
        (DDP, ["--dpo.bta", "0.1"], 2, UNKNOWN_KEY),  # torchrun, 2 workers: no ChildFailedError report
        # found by the main process alone: handed to the other rank (no gloo "connection closed" traceback)
        (DDP, ["--data.kind", "preferences", "--data.dataset", "EMPTY"], 1, EMPTY_FILE),
    ],
    ids=["key typo", "empty data file", "key typo, 2 processes", "empty data file, 2 processes"],
)
def test_a_failed_worker_is_its_one_line_and_its_exit_code(tmp_path, config, argv, code, starts):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    before = listing(tmp_path)
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    cmd = dpo_hub_launch("--config_file", config, "-m", RECIPE_MODULE, *EMBEDDED, *argv, "--output_dir", "o")
    proc = run(cmd, offline_env(tmp_path), cwd=tmp_path)
    assert_one_line(proc, code, starts.replace("EMPTY", str(empty)))
    assert "ChildFailedError" not in proc.stderr and "exitcode" not in proc.stderr, proc.stderr[-3000:]
    assert listing(tmp_path) == before, "nothing is created"


# what a worker prints after the recipe's main() returned (the driver below wraps the recipe module)
DRIVER = """import sys, torch.distributed as dist
from dpo_hub.recipes.gpt2_ultrafeedback import main
code = main(sys.argv[1:])
print(f"exit {code}, process group {'open' if dist.is_initialized() else 'closed'}", flush=True)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "argv, code",
    [([], 0), (["--data.kind", "preferences", "--data.dataset", "EMPTY"], 1)],
    ids=["finished", "data error found by the main process"],
)
def test_each_rank_leaves_the_process_group_before_it_exits(tmp_path, argv, code):
    """Left to interpreter exit, gloo's threads abort a rank that leaves right after its last collective
    (SIGABRT; 7 of 50 loaded runs of a 2-rank gloo script, 0 of 45 with the group destroyed first): over two
    machines, the other one then waits 300 s at torchrun's exit barrier (the multi-node test's CI failure)."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "driver.py").write_text(DRIVER)
    argv = [str(tmp_path / "empty.jsonl") if a == "EMPTY" else a for a in argv]
    small = ["--dpo.max_steps", "1", "--data.limit", "8", "--dpo.max_length", "48"]
    cmd = dpo_hub_launch("--config_file", DDP, "driver.py", *EMBEDDED, *small, *argv, "--output_dir", "o")
    proc = run(cmd, offline_env(tmp_path, CUDA_VISIBLE_DEVICES=""), cwd=tmp_path)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(f"exit {code}, process group closed") == 2, proc.stdout[-3000:]


def test_the_worker_sees_the_launch_it_was_started_by(tmp_path):
    """The worker reads ``dpo-hub launch``'s arguments as it reads ``accelerate launch``'s: a launch that
    accelerate would quietly run as one process is refused by the worker (exit 2), naming the config."""
    cmd = dpo_hub_launch("--cpu", "--num_processes", "2", "-m", RECIPE_MODULE, *EMBEDDED, "--output_dir", "o")
    proc = run(cmd, offline_env(tmp_path), cwd=tmp_path)
    line = assert_one_line(proc, 2, "error: accelerate launch --cpu --num_processes 2 asks for 2 process(es)")
    assert "cpu_ddp.yaml" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/dpo-hub", "launch", "--cpu", "-m", "m"],
        ["python", "-m", "dpo_hub", "launch", "--cpu", "-m", "m"],
        ["/venv/bin/dpo-hub", "--debug", "launch", "--cpu", "-m", "m"],
    ],
)
def test_the_launching_command_line_is_found(argv):
    assert _launch_args(argv) == ["--cpu", "-m", "m"]


# ---- failures of the launch itself: one line, exit 2, before any worker -----------------------------------
@pytest.mark.parametrize(
    "config_text, argv, words",
    [
        (None, ["--config_file", "missing.yaml"], "--config_file missing.yaml: no such file"),
        (None, ["--config_file", "cpu.yml"], "did you mean cpu.yaml?"),  # a near name in that folder
        ("distributed_type: [oops\n", [], "not valid YAML (line 2, column 1)"),
        ("- a\n- b\n", [], "holds a list, not accelerate settings"),
        ("", [], "holds nothing, not accelerate settings"),
        (UNKNOWN_CONFIG_KEY, [], "unknown keys (['num_procesess'])"),
        (None, ["--config_file", CPU, "--module", "dpo_hub.recipes.gpt2_ultrafedback"], "did you mean -m "),
        (None, ["--config_file", CPU, "-m", "no_such_package.recipe"], "no module named 'no_such_package"),
        (None, ["--config_file", CPU, "no_such_script.py"], "no script 'no_such_script.py'"),
        (None, ["--no_such_flag", "-m", RECIPE_MODULE], "unrecognized arguments: --no_such_flag"),
    ],
    ids=[
        "missing",
        "near name",
        "bad YAML",
        "a list",
        "empty",
        "unknown key",
        "module typo",
        "no module",
        "no script",
        "unknown flag",
    ],
)
def test_a_launch_that_cannot_start_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, config_text, argv, words
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu.yaml").write_text(Path(CPU).read_text())
    if config_text is not None:
        (tmp_path / "bad.yaml").write_text(config_text)
        argv = ["--config_file", "bad.yaml", *argv]
    if "-m" not in argv and "--module" not in argv and not any(a.endswith(".py") for a in argv):
        argv = [*argv, "-m", RECIPE_MODULE]
    before = listing(tmp_path)
    assert main(["launch", *argv, "--output_dir", "o"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in out + err and listing(tmp_path) == before


def test_the_module_suggestion_is_a_recipe(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--cpu", "-m", "dpo_hub.recipes.smollm_truthfulqa"]) == 2
    assert "did you mean -m dpo_hub.recipes.smollm2_truthfulqa?" in capsys.readouterr().err


@pytest.mark.parametrize(
    "ending, code, line",
    [
        ("sys.exit(3)", 3, None),
        (
            "os.kill(os.getpid(), signal.SIGKILL)",
            137,
            "error: the training process of rank 0 was killed by SIGKILL",
        ),
    ],
)
def test_a_module_of_the_current_folder_runs_and_its_exit_code_is_the_launchs(
    tmp_path, monkeypatch, capfd, ending, code, line
):
    """``python -m`` looks in the current folder first, so the module check does too; whatever code the
    worker exits with is the launch's and the launcher adds nothing to its output, except one line for a
    worker killed by a signal (it had no chance to say why)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_recipe.py").write_text(f"import os, signal, sys\nprint('ran', sys.argv[1:])\n{ending}\n")
    assert main(["launch", "--config_file", CPU, "-m", "my_recipe", "--x", "1"]) == code
    out, err = capfd.readouterr()
    assert "ran ['--x', '1']" in out
    errors = [x for x in err.splitlines() if "error" in x.lower()]
    assert "Traceback" not in err and len(errors) == (1 if line else 0), err
    assert not line or errors[0].startswith(line), err


def test_help_is_accelerates_with_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["launch", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: dpo-hub launch")
    assert "--config_file" in text and "--num_processes" in text and "--cpu" in text  # accelerate's
    assert "2 bad input" in text and "130 interrupted" in text


# ---- Ctrl-C: the worker saves at the step's end; the launch exits 130 -------------------------------------
SLOW_STEP = [
    "--data.limit",
    "64",
    "--dpo.per_device_train_batch_size",
    "2",
    "--dpo.effective_batch_size",
    "48",
]


@pytest.mark.parametrize(
    "config, extra",
    [
        (CPU, []),
        pytest.param(DDP, [], marks=pytest.mark.scale_out),  # torchrun: its workers are out of Ctrl-C's reach
        # 24 forward/backward passes a step: longer than the 5 s plain accelerate launch waits before SIGKILL
        # (it measured 5.6 s to exit 130 with no checkpoint of the step; this: 56 s, saved; load 8)
        pytest.param(CPU, SLOW_STEP, marks=pytest.mark.scale_out),
    ],
    ids=["1 process", "2 processes", "a step longer than 5 s"],
)
def test_ctrl_c_saves_and_exits_130(tmp_path, config, extra):
    """Ctrl-C to the launch's process group after a step is logged: the step under way finishes and is
    saved, one line, exit 130; the launcher waits for it however long it takes."""
    out = tmp_path / "run"
    cmd = dpo_hub_launch(
        "--config_file",
        config,
        "-m",
        RECIPE_MODULE,
        *EMBEDDED[:-2],
        "--dpo.max_steps",
        "400",
        "--dpo.logging_steps",
        "1",
        *extra,
        "--output_dir",
        str(out),
    )
    live = Live(cmd, offline_env(tmp_path), tmp_path)
    seen = int(live.wait_for(r"\[dpo_hub\] step (\d+)/400").group(1))
    code, before, after = live.ctrl_c()
    text = before + after
    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "CalledProcessError" not in text and "ChildFailedError" not in text
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    found = re.fullmatch(r"error: interrupted at step (\d+): a checkpoint is saved in .*", lines[0])
    assert found, lines
    step = int(found.group(1))
    assert seen <= step <= seen + 3, "it stops at the end of the step under way"
    assert (folder_for(out) / f"checkpoint-{step}" / MARKER).is_file(), "the step is saved, marked complete"
    assert not out.exists()
