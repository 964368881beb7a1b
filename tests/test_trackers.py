"""Trackers: a real run logs to TensorBoard under its output folder; a tracker that is missing is refused
first."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import RECIPE_MODULE, offline_env, read_metrics, run

from dpo_hub import Recipe, RecipeError, train
from dpo_hub.config.trackers import PACKAGES
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

STEPS = 4


def test_tensorboard_events_of_a_real_run_read_offline(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = run(
        [
            sys.executable,
            "-m",
            RECIPE_MODULE,
            "--model",
            "embedded",
            "--data.dataset",
            "embedded",
            "--data.limit",
            "40",
            "--dpo.max_steps",
            str(STEPS),
            "--dpo.logging_steps",
            "1",
            "--dpo.report_to",
            "tensorboard",
            "--dpo.max_length",
            "128",
            "--generation.max_new_tokens",
            "4",
            "--output_dir",
            str(out),
        ],
        offline_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = sorted((out / "runs").rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard events under {out / 'runs'}"
    scalars: dict[str, list] = {}
    for folder in {e.parent for e in events}:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    assert [e.step for e in scalars["train/loss"]] == list(range(1, STEPS + 1))
    logged = [e["loss"] for e in read_metrics(out)["log_history"] if "loss" in e]
    assert [e.value for e in scalars["train/loss"]] == pytest.approx(logged, rel=1e-5), (
        "the same series as loss.png"
    )
    evals = [e.step for e in scalars["eval/loss"]]
    assert evals[0] == 0 and evals[-1] == STEPS, "eval before and after training"
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "runs").exists(), "nothing written to the working directory"
    assert not (tmp_path / "run.checkpoints").exists()
    assert Recipe.from_yaml(out / "recipe.yaml").dpo.extra["report_to"] == ["tensorboard"]


def test_a_tracker_that_is_not_installed_is_refused_before_anything_loads(tmp_path):
    missing = next(
        (
            n
            for n, package in PACKAGES.items()
            if importlib.util.find_spec(package.replace("-", "_")) is None
            and importlib.util.find_spec(n) is None
        ),
        None,
    )
    if missing is None:
        pytest.skip("every tracker transformers knows is installed here")
    recipe = RECIPE.override(
        {
            "model": "embedded",
            "data.dataset": "embedded",
            "dpo.report_to": f"{missing}",
            "output_dir": str(tmp_path / "o"),
        }
    )
    with pytest.raises(RecipeError, match=f"{missing} is not installed; pip install {PACKAGES[missing]}"):
        train(recipe)
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.incomplete").exists()


def test_trackio_logs_offline_into_the_run_folder(tmp_path):
    """trackio (no Space, no bucket) writes its project database into the run, with the same losses."""
    import sqlite3

    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed (trackio 0.43 needs pillow<13, CI pins pillow 13)")
    out = tmp_path / "run"
    env = {k: v for k, v in offline_env(tmp_path).items() if k != "TRACKIO_DIR"}
    command = [sys.executable, "-m", RECIPE_MODULE, "--model", "embedded", "--data.dataset", "embedded"]
    options = ["--data.limit", "40", "--dpo.max_steps", str(STEPS), "--dpo.logging_steps", "1"]
    options += ["--dpo.report_to", "trackio", "--dpo.max_length", "128", "--generation.max_new_tokens", "4"]
    proc = run([*command, *options, "--output_dir", str(out)], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    databases = list((out / "trackio").glob("*.db"))
    assert [d.name for d in databases] == ["huggingface.db"], list((out / "trackio").iterdir())
    with sqlite3.connect(databases[0]) as db:
        rows = [json.loads(r[0]) for r in db.execute("select metrics from metrics order by id")]
    logged = [e["loss"] for e in read_metrics(out)["log_history"] if "loss" in e]
    assert [r["train/loss"] for r in rows if "train/loss" in r] == pytest.approx(logged, rel=1e-5)
    assert any("eval/loss" in r for r in rows), "the evals are logged too"
    assert not (tmp_path / "run.checkpoints").exists()
    assert not (tmp_path / "hf_home" / "trackio").exists(), "not trackio's default folder (HF_HOME/trackio)"
