"""Errors as a user sees them: one ``error: ...`` line, no traceback, the documented exit code.

Real subprocesses of the README's commands (``python -m``, ``accelerate launch``, ``dpo-hub``) on the embedded
default, plus in-process checks of the smaller command-line cases. ``accelerate launch`` (1.16) turns any
non-zero exit of its worker into its own exit code 1: with ``--quiet`` it adds nothing else, without it a
``CalledProcessError`` traceback (its code, which dpo_hub never runs in). Ctrl-C reaches both processes and
accelerate then sends the worker SIGTERM (SIGKILL 5 s later): the worker finishes its step, saves and exits
130, and so does accelerate.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import RECIPE_MODULE, accelerate_cmd, offline_env, run

from dpo_hub.cli.launch import recipe_from_argv, run_recipe
from dpo_hub.cli.main import main
from dpo_hub.errors import DpoHubError, RecipeError
from dpo_hub.recipe import Recipe
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.checkpoints import MARKER, folder_for

EMBEDDED = ["--model", "embedded", "--data.dataset", "embedded", "--data.limit", "24", "--dpo.max_steps", "2"]
BAD_BETA = "error: command line: dpo.beta=-1.0 must be > 0"


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line.lower()]


def assert_one_line(proc: subprocess.CompletedProcess, code: int, starts: str) -> str:
    """Exactly one line mentions an error, it starts with ``starts``, no traceback, exit ``code``."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text and "CalledProcessError" not in text, text[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(starts), lines
    return lines[0]


# ---- bad input: python -m, accelerate launch --quiet, accelerate launch -----------------------------------
def test_bad_input_is_one_line_and_exit_2_under_python_m(tmp_path):
    proc = run(
        [
            sys.executable,
            "-m",
            RECIPE_MODULE,
            *EMBEDDED,
            "--dpo.beta",
            "-1",
            "--output_dir",
            str(tmp_path / "o"),
        ],
        offline_env(tmp_path),
        cwd=tmp_path,
    )
    assert_one_line(proc, 2, BAD_BETA)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "case, argv, code, starts",
    [
        ("bad value", ["--dpo.beta", "-1"], 1, BAD_BETA),
        ("empty data file", ["--data.kind", "preferences", "--data.dataset", "EMPTY"], 1, "error: "),
    ],
)
def test_under_accelerate_launch_quiet_the_worker_line_is_all(tmp_path, case, argv, code, starts):
    """The same one line as ``python -m``; the exit code is accelerate's (1 for any failure of its worker)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    out = tmp_path / "o"
    cmd = [*accelerate_cmd(), "--quiet", "-m", RECIPE_MODULE, *EMBEDDED, *argv, "--output_dir", str(out)]
    proc = run(cmd, offline_env(tmp_path), cwd=tmp_path)
    assert_one_line(proc, code, starts)
    assert not out.exists()


def test_under_plain_accelerate_launch_the_worker_line_comes_once(tmp_path):
    """Without ``--quiet`` accelerate adds its own traceback (repeating the worker's stderr) and exit 1: that
    part is accelerate's code, which dpo_hub never runs in. If this fails, accelerate changed: update
    docs/recipes.md ("Errors and what is checked first")."""
    cmd = [*accelerate_cmd(), "-m", RECIPE_MODULE, *EMBEDDED, "--dpo.beta", "-1", "--output_dir", "o"]
    proc = run(cmd, offline_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        line for line in proc.stderr.splitlines() if line.startswith(BAD_BETA)
    ] and len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert "subprocess.CalledProcessError" in proc.stderr  # accelerate's, see the docstring
    assert not (tmp_path / "o").exists()


# ---- Ctrl-C -----------------------------------------------------------------------------------------------
class Live:
    """A process group whose merged output is read as it comes (as a terminal shows it)."""

    def __init__(self, cmd: list[str], env: dict, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group: Ctrl-C signals the group, like a terminal
        )
        self.text, self.lock = "", threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read(1), ""):
            with self.lock:
                self.text += chunk

    def wait_for(self, pattern: str, timeout: float = 400) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = re.search(pattern, self.text)
            if found:
                return found
            assert self.proc.poll() is None, f"ended before {pattern!r}: " + self.text[-3000:]
            assert time.monotonic() < deadline, f"no {pattern!r}: " + self.text[-3000:]
            time.sleep(0.05)

    def ctrl_c(self, timeout: float = 120) -> tuple[int, str, str]:
        """SIGINT to the whole group; the exit code, the output before it and after it."""
        with self.lock:
            before = len(self.text)
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code, self.text[:before], self.text[before:]


def test_ctrl_c_under_accelerate_launch_saves_at_the_step_end_and_exits_130(tmp_path):
    out = tmp_path / "run"
    cmd = [
        *accelerate_cmd(),
        "-m",
        RECIPE_MODULE,
        *EMBEDDED[:-2],
        "--dpo.max_steps",
        "400",  # epochs of 20 steps, evaluated at each epoch's end (eval_strategy epoch)
        "--dpo.logging_steps",
        "1",
        "--output_dir",
        str(out),
    ]
    live = Live(cmd, offline_env(tmp_path), tmp_path)
    seen = int(live.wait_for(r"\[dpo_hub\] step (\d+)/400").group(1))
    code, before, after = live.ctrl_c()
    text = before + after
    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "CalledProcessError" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    found = re.fullmatch(
        r"error: interrupted at step (\d+): a checkpoint is saved in (.+?)\. Run the same.*", lines[0]
    )
    assert found, lines
    step = int(found.group(1))
    assert seen <= step <= seen + 3, "it stops at the end of the step under way"
    assert (folder_for(out) / f"checkpoint-{step}" / MARKER).is_file(), "the step is saved, marked complete"
    assert "eval_runtime" not in after and "eval after training" not in after, "no evaluation after Ctrl-C"
    assert not out.exists()


def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path):
    """Outside the training loop (loading, the eval before training) there is no step to finish: it stops at
    once, with one line."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", RECIPE_MODULE, *EMBEDDED, "--output_dir", str(out)]
    live = Live(cmd, offline_env(tmp_path), tmp_path)
    live.wait_for(r"\[dpo_hub\] rank 0 of world size 1 ready")
    code, before, after = live.ctrl_c()
    text = before + after
    assert code == 130 and "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
    assert not out.exists()


# ---- smaller command-line cases ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [["--output_dir"], ["--dpo.beta"], ["--data.limit"], ["--name"], ["--output_dir", "--dpo.beta", "0.2"]],
)
def test_a_bare_flag_is_only_for_a_true_false_key(argv):
    with pytest.raises(RecipeError, match=rf"--{argv[0][2:]} needs a value"):
        recipe_from_argv(RECIPE, argv)


def test_a_bare_true_false_key_still_means_true():
    recipe = recipe_from_argv(RECIPE, ["--dpo.gradient_checkpointing"])
    assert recipe.dpo.gradient_checkpointing is True


def test_a_bare_config_needs_a_file():
    with pytest.raises(RecipeError, match="--config needs a value"):
        recipe_from_argv(RECIPE, ["--config"])


def test_a_trailing_bare_output_dir_creates_nothing(tmp_path):
    proc = run(
        [sys.executable, "-m", RECIPE_MODULE, *EMBEDDED, "--output_dir"], offline_env(tmp_path), cwd=tmp_path
    )
    assert_one_line(proc, 2, "error: command line: --output_dir needs a value")
    assert not (tmp_path / "true").exists() and not (tmp_path / "true.checkpoints").exists()


@pytest.mark.parametrize("name", ["recipes/gpt2_ultrafeedback.yaml", "my.yml", "run.json"])
def test_a_positional_recipe_file_gets_the_config_hint(capsys, name):
    assert run_recipe(RECIPE, [name]) == 2
    err = capsys.readouterr().err.strip()
    hint = f"; to train from a recipe file, pass --config {name}"
    assert err == f"error: command line: expected --key value, got {name!r}{hint}"


def test_a_positional_word_gets_no_config_hint(capsys):
    assert run_recipe(RECIPE, ["beta"]) == 2
    assert "--config" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_debug_before_the_command_runs_it(capsys, command):
    """``dpo-hub --debug train`` trains (here: fails on a bad value, with the traceback --debug asks for)."""
    argv = ["--debug", command, "--dpo.beta", "-1"] + (["--grid", "lora.r=4,8"] if command == "sweep" else [])
    with pytest.raises(DpoHubError, match=r"dpo.beta=-1.0 must be > 0"):
        main(argv)
    assert main(argv[1:]) == 2 and "error: command line: dpo.beta=-1.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "yaml_value, word", [("no", "false"), ("off", "false"), ("false", "false"), ("yes", "true")]
)
def test_yaml_booleans_in_a_text_key_say_to_quote_them(tmp_path, yaml_value, word):
    path = tmp_path / "r.yaml"
    path.write_text(f"dpo:\n  save_strategy: {yaml_value}\n")
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    assert f"dpo.save_strategy is text, but YAML read {word}" in str(err.value)
    assert "quote the value, e.g. save_strategy: " in str(err.value)
    path.write_text('dpo:\n  save_strategy: "no"\n')
    assert Recipe.from_yaml(path).dpo.save_strategy == "no"


def test_yaml_boolean_in_an_optional_text_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("push_to_hub: no\n")
    with pytest.raises(RecipeError, match="push_to_hub is text, but YAML read false"):
        Recipe.from_yaml(path)


def test_pull_of_an_adapter_whose_base_is_unavailable_suggests_no_training_flag(tmp_path, monkeypatch):
    """pull, compare and merge have no --model: the message names the base and what to check."""
    import json

    from safetensors.torch import save_file

    from dpo_hub.hub.runs import open_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"base_model_name_or_path": "nobody/no-such-base", "peft_type": "LORA", "r": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file({}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(DpoHubError) as err:
        open_run(folder)
    message = str(err.value)
    assert "base model 'nobody/no-such-base' named by the adapter could not be loaded" in message
    assert "--model" not in message and "check that it exists and is reachable" in message


def test_local_hub_server_without_its_extra_is_one_line(tmp_path):
    fake = tmp_path / "fake" / "uvicorn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named uvicorn", name="uvicorn")\n'
    )
    env = offline_env(tmp_path, PYTHONPATH=str(tmp_path / "fake"))
    proc = run([sys.executable, "-m", "dpo_hub.testing.hub"], env, timeout=120)
    assert_one_line(
        proc, 1, "error: the local Hub server needs the 'hub-server' extra (uvicorn is not installed)"
    )
    code = "import dpo_hub.testing.hub"  # imported, not run: still an ImportError for the caller to handle
    proc = run([sys.executable, "-c", code], env, timeout=120)
    assert proc.returncode == 1 and "ImportError: the local Hub server needs" in proc.stderr
