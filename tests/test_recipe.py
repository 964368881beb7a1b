"""Recipe: YAML round-trip, fingerprints, overrides and their errors."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time

import pytest
from conftest import RECIPE_MODULE, REPO, offline_env, run

from dpo_hub import HHRLHF, LORA_PRESETS, DPOPreset, LoraPreset, Recipe, RecipeError, UltraFeedback
from dpo_hub.cli.launch import parse_overrides, recipe_from_argv, run_recipe
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE, SHIPPED, TUTORIAL


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_yaml_is_the_recipe_and_round_trips(name):
    recipe, header = SHIPPED[name]
    shipped = REPO / "recipes" / f"{name}.yaml"
    assert shipped.read_text() == recipe.to_yaml(header), (
        "regenerate with gpt2_ultrafeedback.write_yaml_files()"
    )
    assert "accelerate launch" in shipped.read_text().splitlines()[1]
    assert Recipe.from_yaml(shipped) == recipe


def test_tutorial_preset_is_the_tutorials_selection():
    assert (TUTORIAL.data.limit, TUTORIAL.data.eval_fraction, TUTORIAL.data.format) == (50, 0.1, "text")
    assert TUTORIAL.dpo == RECIPE.dpo and TUTORIAL.lora == RECIPE.lora


@pytest.mark.parametrize(
    "recipe",
    [
        RECIPE,
        RECIPE.override(
            {"data.kind": "hh_rlhf", "dpo.loss_type": "ipo", "lora.target_modules": "all-linear"}
        ),
        RECIPE.override(
            {"data.kind": "preferences", "data.dataset": "x.csv", "data.prompt_column": "q", "threads": "3"}
        ),
    ],
)
def test_yaml_round_trip(tmp_path, recipe):
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml("header"))
    assert Recipe.from_yaml(path) == recipe
    assert Recipe.from_yaml(path).fingerprint() == recipe.fingerprint()


def test_command_line_overrides():
    recipe = recipe_from_argv(
        RECIPE,
        [
            "--dpo.beta",
            "0.2",
            "--data.limit=500",
            "--output_dir",
            "out/",
            "--dpo.gradient_checkpointing",
            "--lora.target_modules",
            "c_attn,c_fc",
        ],
    )
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


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("dpo.bta", "0.2", ["dpo.bta", "dpo.beta"]),
        ("data.limt", "5", ["data.limt", "data.limit"]),
        ("outputdir", "x", ["outputdir", "output_dir"]),
        ("dpo.beta", "high", ["dpo.beta", "float", "high"]),
        ("dpo.loss_type", "sigmod", ["sigmoid"]),
        ("data.kind", "csv", ["data.kind", "preferences"]),
    ],
)
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
    proc = run(
        [sys.executable, "-m", RECIPE_MODULE, "--dpo.bta", "0.2", "--output_dir", str(tmp_path / "o")],
        offline_env(tmp_path),
    )
    assert proc.returncode == 2
    assert "unknown recipe key 'dpo.bta'" in proc.stderr and "dpo.beta" in proc.stderr
    assert "[dpo_hub]" not in proc.stdout and not (tmp_path / "o").exists()
    assert time.time() - started < 60


# Literal fingerprints of the shipped recipes, as users have them in checkpoint and sweep folder names.
PINNED_FINGERPRINTS = {
    "dpo_hub.recipes.gpt2_ultrafeedback.RECIPE": "527d672256bc",
    "dpo_hub.recipes.smollm2_truthfulqa.RECIPE": "c496c672952c",
    "recipes/gpt2_ultrafeedback.yaml": "527d672256bc",
    "recipes/gpt2_ultrafeedback_tutorial.yaml": "189bd763c336",
    "recipes/smollm2_truthfulqa.yaml": "c496c672952c",
    "Recipe(model='gpt2')": "9a0d3eba6fb1",  # a plain model name: fingerprinted from the name alone
}
FINGERPRINT_CHANGED = (
    "changing a fingerprint invalidates every user's checkpoints (resume refuses them) and sweep "
    "points (sweeps retrain them); if this is deliberate, record it in CHANGELOG.md and update "
    "PINNED_FINGERPRINTS, else keep the fingerprint (e.g. leave a new default-valued field out of it)"
)


def _pinned_recipe(name: str) -> Recipe:
    if name.endswith(".yaml"):  # as `dpo-hub train --config FILE` loads it
        return Recipe.from_yaml(REPO / name)
    if name.startswith("Recipe("):
        return Recipe(model="gpt2")
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", sorted(PINNED_FINGERPRINTS))
def test_shipped_fingerprints_are_pinned(name):
    assert _pinned_recipe(name).fingerprint() == PINNED_FINGERPRINTS[name], f"{name}: {FINGERPRINT_CHANGED}"


def test_every_shipped_recipe_has_a_pinned_fingerprint():
    from dpo_hub.recipes import SHIPPED as SHIPPED_MODULES

    pinned = {
        *(f"{m}.RECIPE" for m in SHIPPED_MODULES),
        *(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*.yaml")),
    }
    assert pinned <= set(PINNED_FINGERPRINTS), (
        f"pin the fingerprint of {sorted(pinned - set(PINNED_FINGERPRINTS))}"
    )


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


# ---- pass-through settings and presets by name -------------------------------------------------------------
PASS_THROUGH_ARGV = [
    "--dpo.weight_decay",
    "0.01",
    "--dpo.optim",
    "adamw_torch",
    "--dpo.max_grad_norm",
    "0.5",
    "--dpo.precompute_ref_log_probs",
    "true",
    "--lora.use_rslora",
    "true",
    "--lora.layers_to_transform",
    "0,1",
]


def test_any_trl_and_peft_field_from_the_command_line_reaches_the_library(tmp_path):
    recipe = recipe_from_argv(RECIPE, PASS_THROUGH_ARGV)
    assert dict(recipe.dpo.extra) == {
        "weight_decay": 0.01,
        "optim": "adamw_torch",
        "max_grad_norm": 0.5,
        "precompute_ref_log_probs": True,
    }
    assert dict(recipe.lora.extra) == {"use_rslora": True, "layers_to_transform": [0, 1]}
    config = recipe.dpo.to_dpo_config(str(tmp_path), use_cpu=True)
    assert (config.weight_decay, config.optim.value, config.max_grad_norm) == (0.01, "adamw_torch", 0.5)
    assert config.precompute_ref_log_probs is True and config.report_to in ("none", [], ["none"])
    lora = recipe.lora.to_peft_config()
    assert lora.use_rslora is True and lora.layers_to_transform == [0, 1] and lora.task_type == "CAUSAL_LM"


def test_pass_through_values_are_recorded_with_the_librarys_help_and_round_trip(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "dpo:\n  weight_decay: 0.01\n  report_to: tensorboard\nlora:\n  r: 16\n  preset: all_linear\n"
        "  use_rslora: true\n"
    )
    recipe = Recipe.from_yaml(path)
    text = recipe.to_yaml()
    assert "  weight_decay: 0.01  # Weight decay coefficient applied by the optimizer" in text
    assert "  use_rslora: true  # When set to True, uses [Rank-Stabilized LoRA]" in text
    assert "  report_to: [tensorboard]" in text and "  preset: all_linear  #" in text
    path.write_text(text)
    assert Recipe.from_yaml(path) == recipe and Recipe.from_yaml(path).to_yaml() == text


def test_fingerprint_counts_what_is_set_and_nothing_else():
    values = RECIPE.to_dict()
    assert {f"dpo.{k}" for k in values["dpo"]} == {k for k in Recipe.keys() if k.startswith("dpo.")}
    assert (
        "weight_decay" not in values["dpo"] and "extra" not in values["dpo"] and "extra" not in values["lora"]
    )
    set_once = RECIPE.override({"dpo.weight_decay": 0.01})
    assert set_once.fingerprint() != RECIPE.fingerprint()
    assert set_once.fingerprint() == RECIPE.override({"dpo": {"weight_decay": "0.01"}}).fingerprint()
    assert RECIPE.override({"lora.use_rslora": True}).fingerprint() != RECIPE.fingerprint()
    assert RECIPE.override({"dpo.report_to": "tensorboard"}).fingerprint() == RECIPE.fingerprint(), (
        "where logs go"
    )
    relabelled = RECIPE.replace(lora=dataclasses.replace(RECIPE.lora, preset="gpt2_all_linear"))
    assert relabelled.fingerprint() == RECIPE.fingerprint(), "the fields, not the preset's name, are computed"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"dpo.wieght_decay": "0.1"}, ["dpo.wieght_decay", "DPOConfig", "dpo.weight_decay"]),
        ({"lora.use_rslor": "true"}, ["lora.use_rslor", "LoraConfig", "lora.use_rslora"]),
        ({"dpo.weight_decay": "heavy"}, ["dpo.weight_decay", "float", "heavy"]),
        ({"lora.layers_to_transform": "a,b"}, ["lora.layers_to_transform", "list of int", "'a,b'"]),
        ({"dpo.optim": "adamw_torc"}, ["dpo.optim", "adamw_torch"]),
        ({"dpo.bf16": "true"}, ["dpo.bf16", "dpo.precision"]),
        ({"dpo.output_dir": "x"}, ["dpo.output_dir", "use output_dir"]),
        ({"dpo.hub_token": "hf_secret"}, ["dpo.hub_token", "hf auth login"]),
        ({"lora.task_type": "SEQ_CLS"}, ["lora.task_type", "CAUSAL_LM"]),
        ({"lora.preset": "all_liner"}, ["lora.preset='all_liner'", "all_linear", "gpt2_attention"]),
        ({"dpo.preset": "tutorail"}, ["dpo.preset", "tutorial"]),
        ({"dpo.report_to": "tensorbord"}, ["dpo.report_to='tensorbord'", "tensorboard", "wandb"]),
        ({"dpo.report_to": "none,tensorboard"}, ["dpo.report_to", "'none' turns every tracker off"]),
        ({"dpo.loss_type": "sigmoid,sft", "dpo.loss_weights": "1"}, ["dpo.loss_weights", "2 weight(s)"]),
        ({"dpo.loss_type": "sigmoid,sigmod"}, ["dpo.loss_type='sigmod'", "sigmoid"]),
        ({"dpo": {"loss_type": []}}, ["dpo.loss_type", "one or more trl losses"]),
        ({"lora": {"preset": ["all_linear"]}}, ["lora.preset=['all_linear'] is unknown", "all_linear"]),
    ],
)
def test_bad_pass_through_and_presets_name_the_key(changes, expected):
    with pytest.raises(RecipeError) as err:
        RECIPE.override(changes, source="command line")
    assert str(err.value).startswith("command line: ")
    assert all(word in str(err.value) for word in expected), str(err.value)
    assert "hf_secret" not in str(err.value)


@pytest.mark.parametrize("order", ["preset first", "preset last"])
def test_preset_by_name_then_fields_on_top(tmp_path, order):
    items = [("preset", "all_linear"), ("r", 16)]
    lora = dict(items if order == "preset first" else items[::-1])
    recipe = RECIPE.override({"lora": lora, "dpo": {"preset": "tutorial", "beta": 0.2}})
    assert (
        recipe.lora == dataclasses.replace(LoraPreset.all_linear(), r=16)
        and recipe.lora.preset == "all_linear"
    )
    assert recipe.lora.fan_in_fan_out is None, "all_linear detects Conv1D; GPT-2's true must not stay behind"
    assert recipe.dpo.beta == 0.2 and recipe.dpo.preset == "tutorial"
    cli = recipe_from_argv(RECIPE, ["--lora.r", "16", "--lora.preset", "all_linear"])
    assert cli.lora == recipe.lora and cli.lora.preset == "all_linear"


def test_keys_name_the_presets_and_optionally_every_settable_library_field():
    assert {"lora.preset", "dpo.preset", "dpo.beta"} <= set(
        Recipe.keys()
    ) and "dpo.weight_decay" not in Recipe.keys()
    every = Recipe.keys(passthrough=True)
    assert {"dpo.weight_decay", "dpo.report_to", "lora.use_rslora", "lora.layers_to_transform"} <= set(every)
    assert not {"dpo.bf16", "dpo.hub_token", "dpo.output_dir", "lora.task_type", "dpo.extra"} & set(every)
    assert len(every) == len(set(every)), "a preset field is not listed again as a pass-through one"


def test_a_plugin_can_register_a_preset(monkeypatch):
    monkeypatch.setitem(
        LORA_PRESETS, "wide", lambda: LoraPreset(r=64, lora_alpha=128, extra={"use_rslora": True})
    )
    recipe = RECIPE.override({"lora.preset": "wide"})
    assert (recipe.lora.r, recipe.lora.preset, dict(recipe.lora.extra)) == (64, "wide", {"use_rslora": True})


def test_help_lists_the_chosen_adapters_keys_and_how_to_pass_through(capsys):
    assert (
        run_recipe(
            RECIPE,
            [
                "--data.kind",
                "preferences",
                "--lora.preset",
                "all_linear",
                "--dpo.weight_decay",
                "0.01",
                "--help",
            ],
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "--data.prompt_column" in out and "--data.chosen_column" in out
    assert "argilla/ultrafeedback" not in out, "UltraFeedback's own dataset help"
    assert "--lora.preset                          'all_linear'" in out
    assert "--dpo.weight_decay" in out and "Weight decay coefficient" in out
    assert "Any other trl.DPOConfig field" in out and "Any other peft.LoraConfig field" in out
    assert len(out.splitlines()) < 80, "the pass-through fields are pointed to, not listed"
