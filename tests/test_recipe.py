"""Recipe: YAML round-trip, fingerprints, overrides and their errors."""

from __future__ import annotations

import sys
import time

import pytest
from conftest import RECIPE_MODULE, REPO, offline_env, run

from dpo_hub import HHRLHF, DPOPreset, Recipe, RecipeError, UltraFeedback
from dpo_hub.launch import parse_overrides, recipe_from_argv
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE, SHIPPED, TUTORIAL


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_yaml_is_the_recipe_and_round_trips(name):
    recipe, header = SHIPPED[name]
    shipped = REPO / "recipes" / f"{name}.yaml"
    assert shipped.read_text() == recipe.to_yaml(header), "regenerate with gpt2_ultrafeedback.write_yaml_files()"
    assert "accelerate launch" in shipped.read_text().splitlines()[1]
    assert Recipe.from_yaml(shipped) == recipe


def test_tutorial_preset_is_the_tutorials_selection():
    assert (TUTORIAL.data.limit, TUTORIAL.data.eval_fraction, TUTORIAL.data.format) == (50, 0.1, "text")
    assert TUTORIAL.dpo == RECIPE.dpo and TUTORIAL.lora == RECIPE.lora


@pytest.mark.parametrize("recipe", [
    RECIPE,
    RECIPE.override({"data.kind": "hh_rlhf", "dpo.loss_type": "ipo", "lora.target_modules": "all-linear"}),
    RECIPE.override({"data.kind": "preferences", "data.dataset": "x.csv", "data.prompt_column": "q", "threads": "3"}),
])
def test_yaml_round_trip(tmp_path, recipe):
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml("header"))
    assert Recipe.from_yaml(path) == recipe
    assert Recipe.from_yaml(path).fingerprint() == recipe.fingerprint()


def test_command_line_overrides():
    recipe = recipe_from_argv(RECIPE, ["--dpo.beta", "0.2", "--data.limit=500", "--output_dir", "out/",
                                       "--dpo.gradient_checkpointing", "--lora.target_modules", "c_attn,c_fc"])
    assert recipe.dpo.beta == 0.2 and recipe.data.limit == 500 and recipe.output_dir == "out/"
    assert recipe.dpo.gradient_checkpointing is True
    assert recipe.lora.target_modules == ("c_attn", "c_fc")
    assert RECIPE.dpo.beta == 0.1, "overrides must not mutate the base recipe"
    assert parse_overrides(["--config", "a.yaml", "--x", "1"]) == ("a.yaml", {"x": "1"})


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace(name="mine").to_yaml())
    recipe = recipe_from_argv(RECIPE, ["--config", str(path), "--data.limit", "None"])
    assert recipe.name == "mine" and recipe.data.limit is None


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("dpo.bta", "0.2", ["dpo.bta", "dpo.beta"]),
    ("data.limt", "5", ["data.limt", "data.limit"]),
    ("outputdir", "x", ["outputdir", "output_dir"]),
    ("dpo.beta", "high", ["dpo.beta", "float", "high"]),
    ("dpo.loss_type", "sigmod", ["sigmoid"]),
    ("data.kind", "csv", ["data.kind", "preferences"]),
])
def test_bad_overrides_name_the_key(key, value, expected):
    with pytest.raises(RecipeError) as err:
        RECIPE.override({key: value})
    assert all(word in str(err.value) for word in expected), str(err.value)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dpo:\n  betta: 0.3\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml.*dpo\.betta.*dpo\.beta"):
        Recipe.from_yaml(path)
    path.write_text("- a list\n")
    with pytest.raises(RecipeError, match="bad.yaml.*mapping"):
        Recipe.from_yaml(path)


def test_unknown_key_fails_before_any_model_loads(tmp_path):
    started = time.time()
    proc = run([sys.executable, "-m", RECIPE_MODULE, "--dpo.bta", "0.2", "--output_dir", str(tmp_path / "o")],
               offline_env(tmp_path))
    assert proc.returncode == 2
    assert "unknown recipe key 'dpo.bta'" in proc.stderr and "dpo.beta" in proc.stderr
    assert "[dpo_hub]" not in proc.stdout and not (tmp_path / "o").exists()
    assert time.time() - started < 60


def test_fingerprint_is_stable_and_tracks_what_is_computed():
    assert RECIPE.fingerprint() == Recipe.from_dict(RECIPE.to_dict()).fingerprint()
    assert RECIPE.fingerprint() == RECIPE.replace(output_dir="elsewhere", push_to_hub="u/r").fingerprint()
    assert RECIPE.fingerprint() != RECIPE.override({"dpo.beta": 0.2}).fingerprint()
    assert len(RECIPE.fingerprint()) == 12


def test_replace_returns_new_recipe():
    changed = RECIPE.replace(dpo=DPOPreset(beta=0.5), data=HHRLHF(limit=10))
    assert changed.dpo.beta == 0.5 and isinstance(changed.data, HHRLHF)
    assert RECIPE.dpo.beta == 0.1 and isinstance(RECIPE.data, UltraFeedback)
    with pytest.raises(AttributeError):
        RECIPE.dpo.beta = 3  # frozen


def test_help_lists_keys_with_their_help():
    proc = run([sys.executable, "-m", RECIPE_MODULE, "--help"], offline_env(REPO / "tests"))
    assert proc.returncode == 0
    assert "--dpo.beta" in proc.stdout and "--data.limit" in proc.stdout and "LoRA rank" in proc.stdout
