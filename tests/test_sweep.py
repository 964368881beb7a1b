"""Sweeps: a real 2x1 grid on the embedded model from the command line; a rerun skips both finished points."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import offline_env, run

from dpo_hub import Recipe, RecipeError
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.sweep import grid_points, parse_grid

BASE = [
    "--model",
    "embedded",
    "--data.dataset",
    "embedded",
    "--data.limit",
    "40",
    "--dpo.max_steps",
    "2",
    "--dpo.max_length",
    "128",
    "--generation.max_new_tokens",
    "8",
]


def test_sweep_trains_each_point_then_skips_finished_ones(tmp_path):
    out = tmp_path / "sweeps" / "beta"
    cmd = [
        sys.executable,
        "-m",
        "dpo_hub",
        "sweep",
        "--grid",
        "dpo.beta=0.05,0.2",
        "--grid",
        "lora.r=4",
        "--output_dir",
        str(out),
        *BASE,
    ]
    first = run(cmd, offline_env(tmp_path))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    expected = {
        RECIPE.override(
            {
                "model": "embedded",
                "data.dataset": "embedded",
                "data.limit": 40,
                "dpo.max_steps": 2,
                "dpo.max_length": 128,
                "generation.max_new_tokens": 8,
                "dpo.beta": beta,
                "lora.r": 4,
            }
        ).fingerprint()
        for beta in (0.05, 0.2)
    }
    points = {p.name for p in out.iterdir() if p.is_dir()}
    assert points == expected, "one folder per point, named by its recipe fingerprint"
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["grid"] == ["dpo.beta", "lora.r"]
    assert sorted(p["settings"]["dpo.beta"] for p in summary["points"]) == [0.05, 0.2]
    for point in summary["points"]:
        assert point["status"] == "trained" and point["folder"] in expected
        assert (
            Recipe.from_yaml(out / point["folder"] / "recipe.yaml").dpo.beta == point["settings"]["dpo.beta"]
        )
        assert point["eval_after"]["eval_loss"] > 0 and point["comparison"]["n_pairs"] > 0
        assert (
            point["numbers"]["per-token acc. tuned"]
            == point["comparison"]["accuracy"]["per_token"]["tuned"]["value"]
        )
    table = (out / "sweep.md").read_text()
    assert "| point | dpo.beta | lora.r | eval loss | reward accuracy |" in table and table.count("| [`") == 2
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: (out / p / "adapter_model.safetensors").stat().st_mtime_ns for p in expected}

    again = run(cmd, offline_env(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished in") == 2 and "training: effective batch" not in again.stdout
    assert {p: (out / p / "adapter_model.safetensors").stat().st_mtime_ns for p in expected} == stamps
    assert {p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]} == {
        "skipped (finished before)"
    }


def test_grid_values_and_bad_grids(tmp_path):
    assert parse_grid(["dpo.beta=0.05,0.1", "lora.target_modules=[c_attn],[c_attn,c_fc]"]) == {
        "dpo.beta": ["0.05", "0.1"],
        "lora.target_modules": ["[c_attn]", "[c_attn,c_fc]"],
    }
    points = grid_points(RECIPE, parse_grid(["dpo.beta=0.05,0.1", "lora.r=4,8"]))
    assert [s for s, _ in points] == [{"dpo.beta": b, "lora.r": r} for b in (0.05, 0.1) for r in (4, 8)]
    assert len({p.fingerprint() for _, p in points}) == 4
    with pytest.raises(RecipeError, match="expected KEY=V1,V2"):
        parse_grid(["dpo.beta"])
    with pytest.raises(RecipeError, match="did you mean dpo.beta"):
        grid_points(RECIPE, {"dpo.betta": ["0.1"]})
    with pytest.raises(RecipeError, match=r"dpo.beta=-1.0 must be"):
        grid_points(RECIPE, {"dpo.beta": ["0.1", "-1"]})
    with pytest.raises(RecipeError, match="are the same recipe"):
        grid_points(RECIPE, {"dpo.beta": ["0.1", "0.10"]})
    proc = run(
        [
            sys.executable,
            "-m",
            "dpo_hub",
            "sweep",
            "--grid",
            "dpo.betta=0.1",
            "--output_dir",
            str(tmp_path / "s"),
        ],
        offline_env(tmp_path),
    )
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: --grid point dpo.betta=0.1: unknown recipe key"
    )
    assert not (tmp_path / "s").exists(), "a bad grid fails before anything is created"
