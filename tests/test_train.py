"""Real training runs: the shipped recipe under accelerate launch, and the Python API in-process."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import RECIPE_MODULE, offline_env, read_metrics, run

from dpo_hub import OutputError, OutputExistsError, Recipe, train
from dpo_hub.artifacts.folders import staging_dir
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

RUN_FILES = {
    "adapter_model.safetensors",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "recipe.yaml",
    "metrics.json",
    "loss.png",
    "generations.md",
}


def test_run_writes_every_output(trained_run):
    out, _ = trained_run
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert not staging_dir(out).exists()
    assert not (out / "training_args.bin").exists(), "pickled trainer args are not part of a run"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_eval_loss_fell_and_reward_accuracy_rose(trained_run):
    metrics = read_metrics(trained_run[0])
    before, after = metrics["eval_before"], metrics["eval_after"]
    assert before["eval_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert (
        after["eval_loss"] < before["eval_loss"] - 0.01
    )  # held-out families: a small but real fall (0.693 -> 0.678)
    assert after["eval_rewards/accuracies"] >= 0.6 > before["eval_rewards/accuracies"]
    assert after["eval_rewards/margins"] > 0
    assert metrics["data"] == {"train_pairs": 170, "eval_pairs": 30, "dropped": {}, "held_out_by": "group"}
    evals = [e for e in metrics["log_history"] if "eval_loss" in e]
    assert evals[0]["step"] == 0 and evals[-1]["eval_loss"] < evals[0]["eval_loss"], (
        "the curve shows eval before/after"
    )
    assert metrics["train"]["tokens_seen"] > 0 and metrics["train"]["train_runtime"] > 0
    assert {"torch", "trl", "peft", "transformers"} <= set(metrics["versions"])


def test_run_compares_base_and_tuned_on_its_eval_split(trained_run):
    out, proc = trained_run
    preference = read_metrics(out)["comparison"]
    assert preference["n_pairs"] == 30
    per_token = preference["accuracy"]["per_token"]
    assert per_token["tuned"]["value"] > per_token["base"]["value"], (
        "DPO must raise held-out preference accuracy"
    )
    assert preference["reward_margin"]["mean"] > 0 and preference["kl_per_token_chosen"] > 0
    assert {"comparison.json", "comparison.md", "comparison.png"} <= {p.name for p in out.iterdir()}
    assert "preference accuracy" in proc.stdout


def test_embedded_default_is_announced_and_recorded(trained_run):
    out, proc = trained_run
    assert "EMBEDDED DEFAULT" in proc.stdout and "NOT pretrained GPT-2" in proc.stdout
    metrics = read_metrics(out)
    assert metrics["embedded"]["used"] is True and "gpt2 unavailable" in metrics["embedded"]["why"][0]
    resolved = Recipe.from_yaml(out / "recipe.yaml")
    assert resolved.model == "embedded" and resolved.data.dataset == "embedded"
    assert resolved.data.limit == 200 and resolved.fingerprint() == metrics["fingerprint"]


def test_single_process_cpu_run_uses_every_core(trained_run):
    cores = len(os.sched_getaffinity(0))
    assert f"1 process(es), {cores} CPU thread(s) each" in trained_run[1].stdout


def test_generations_side_by_side(trained_run):
    out, proc = trained_run
    text = (out / "generations.md").read_text()
    assert "Is eating animals cruel?" in text and "**base**" in text and "**tuned**" in text
    assert "**tuned**" in proc.stdout
    rows = read_metrics(out)["generations"]
    assert rows[0]["prompt"] == "Is eating animals cruel?" and set(rows[0]) == {
        "prompt",
        "base",
        "tuned",
        "differ",
    }


def small(**changes) -> Recipe:
    return RECIPE.override(
        {
            "model": "embedded",
            "data.dataset": "embedded",
            "data.limit": 24,
            "dpo.max_steps": 2,
            "data.eval_fraction": 0.25,
            **changes,
        }
    )


def test_python_api_and_output_protection(tmp_path):
    out = tmp_path / "api"
    assert train(small(), out) == out.resolve()
    first = (out / "adapter_model.safetensors").read_bytes()
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    with pytest.raises(OutputExistsError, match="already holds a finished run"):
        train(small(**{"dpo.seed": 7}), out)
    assert (out / "adapter_model.safetensors").read_bytes() == first, (
        "a refused run must not touch the old one"
    )
    train(small(**{"dpo.seed": 7, "overwrite_output_dir": True}), out)
    assert (out / "adapter_model.safetensors").read_bytes() != first
    assert Recipe.from_yaml(out / "recipe.yaml").dpo.seed == 7


def test_failed_run_never_looks_complete(tmp_path):
    out = tmp_path / "crash"
    proc = run(
        [
            sys.executable,
            "-m",
            RECIPE_MODULE,
            "--output_dir",
            str(out),
            "--data.limit",
            "20",
            "--lora.target_modules",
            "no_such_layer",
        ],
        offline_env(tmp_path),
    )
    assert proc.returncode != 0 and "no_such_layer" in proc.stderr
    assert not out.exists()
    assert not (staging_dir(out) / "metrics.json").exists()


def test_explicitly_named_model_is_never_replaced(tmp_path):
    proc = run(
        [sys.executable, "-m", RECIPE_MODULE, "--model", "gpt2", "--output_dir", str(tmp_path / "o")],
        offline_env(tmp_path),
    )
    assert proc.returncode != 0 and "'gpt2'" in proc.stderr
    assert "error: model 'gpt2'" in proc.stderr and "Traceback" not in proc.stderr  # refused by the preflight
    assert "gpt2 unavailable" not in proc.stdout and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["push", "{tmp}", "tester/x"], 1, "is not a finished dpo_hub run: metrics.json is missing"),
        (["compare", "{tmp}/missing"], 1, "no such run folder"),
        (["train", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml: cannot read the recipe file"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, args, code, message):
    cmd = [sys.executable, "-m", "dpo_hub", *(a.format(tmp=tmp_path) for a in args)]
    proc = run(cmd, offline_env(tmp_path))
    assert proc.returncode == code and proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    debug = run(
        [*cmd, "--debug"] if args[0] == "train" else [*cmd[:3], "--debug", *cmd[3:]], offline_env(tmp_path)
    )
    assert "Traceback" in debug.stderr and message in debug.stderr, "--debug shows the traceback"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("a_file", "is a file, not a folder"),
        ("a_file/run", "is not a writable folder"),
    ],
)
def test_unwritable_output_dir_fails_before_anything_loads(tmp_path, where, message):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputError, match=message):
        train(small(), tmp_path / where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"], "nothing was created"


NOISE = (
    "is deprecated and will be removed in v6",
    "Could not find a config file in",
    "Unable to fetch remote file",
    "Saving the dataset",
    "Generating train split",
)


def test_run_shows_only_warnings_that_concern_users(trained_run):
    _, proc = trained_run
    for noise in NOISE:
        assert noise not in proc.stderr + proc.stdout, noise
    assert "EMBEDDED DEFAULT" in proc.stdout, "dpo_hub's own warnings still show"


def test_noise_filters_are_narrow():
    import warnings
    from functools import partial

    from dpo_hub.runtime import quiet_known_noise

    warn = partial(warnings.warn, stacklevel=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        warn("`gradient_checkpointing` is deprecated and will be removed in v6. Use x.", FutureWarning)
        warn(
            "Could not find a config file in gpt2 - will assume that the vocabulary was not modified.",
            UserWarning,
        )
        warn("`other_setting` is deprecated and will be removed in v6.", FutureWarning)
        warn(
            "Could not find a config file in gpt2 - will assume that the vocabulary was not modified.",
            RuntimeWarning,
        )
    assert [str(w.message)[:15] for w in caught] == ["`other_setting`", "Could not find "]
