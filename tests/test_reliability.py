"""Reliability (issue 22): dpo_hub never deletes files it did not write, a failed start leaves nothing
behind and never blocks its retry, paths mean what they say, and a resume refuses data that changed since
its checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, offline_env, read_metrics, run

from dpo_hub import DataError, OutputError, OutputExistsError, Recipe, RecipeError, embedded, train
from dpo_hub.artifacts import folders
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training import checkpoints
from dpo_hub.training import run as run_module
from dpo_hub.training.preflight import check_recipe

SMALL = {
    "model": "embedded",
    "data.dataset": "embedded",
    "data.limit": 16,
    "data.eval_fraction": 0.25,
    "dpo.max_steps": 1,
    "dpo.max_length": 64,
    "dpo.per_device_eval_batch_size": 4,
    "generation.max_new_tokens": 2,
}


def small(**changes) -> Recipe:
    return RECIPE.override({**SMALL, **changes})


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): what "nothing changed" compares."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def user_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "src").mkdir()
    (folder / "src" / "main.py").write_text("print('mine')\n")


def sample_rows(path: Path, n: int, edit: int | None = None) -> Path:
    lines = embedded.SAMPLE_PATH.read_text(encoding="utf-8").splitlines()[:n]
    if edit is not None:  # same number of rows, one prompt changed
        row = json.loads(lines[edit])
        row["prompt"] = row["prompt"] + " Please answer briefly."
        row["chosen"][0]["content"] = row["prompt"]
        row["rejected"][0]["content"] = row["prompt"]
        lines[edit] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- 1. data loss: only a dpo_hub run is ever replaced -----------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(user_files, id="user_files"),
        pytest.param(lambda f: (f.mkdir(), (f / "metrics.json").write_text("{}")), id="metrics_only"),
        pytest.param(lambda f: (f.mkdir(), (f / "recipe.yaml").write_text("x: 1")), id="recipe_only"),
        pytest.param(
            lambda f: (
                f.mkdir(),
                (f / "metrics.json").write_text("not json"),
                (f / "recipe.yaml").write_text(""),
            ),
            id="metrics_not_json",
        ),
    ],
)
@pytest.mark.parametrize("overwrite", [True, False])
def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path, make, overwrite):
    out = tmp_path / "work"
    make(out)
    before = listing(tmp_path)
    with pytest.raises(OutputExistsError) as err:
        train(small(overwrite_output_dir=overwrite), out)
    message = str(err.value)
    assert f"{out} already holds files that are not a dpo_hub run" in message
    assert (
        "nothing was changed" in message
        and "replaces only a previous dpo_hub run, never other files" in message
    )
    assert listing(tmp_path) == before, "nothing was created or deleted"


def test_output_dir_dot_with_overwrite_keeps_the_users_files(tmp_path, monkeypatch):
    user_files(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    before = listing(tmp_path)
    with pytest.raises(OutputExistsError, match="not a dpo_hub run"):
        train(small(overwrite_output_dir=True), ".")
    assert listing(tmp_path) == before


def test_cli_overwrite_of_a_project_folder_is_refused(tmp_path):
    project = tmp_path / "project"
    user_files(project)
    before = listing(tmp_path)
    cmd = [sys.executable, "-m", "dpo_hub", "train", "--model", "embedded", "--data.dataset", "embedded"]
    proc = run(
        [*cmd, "--output_dir", ".", "--overwrite_output_dir", "true"],
        offline_env(tmp_path / "env"),
        cwd=project,
    )
    assert proc.returncode != 0 and "not a dpo_hub run" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert {k: v for k, v in listing(tmp_path).items() if not k.startswith("env")} == before


def test_refusal_of_a_finished_run_says_overwrite_works_only_for_runs(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"fingerprint": "x"}))
    (out / "recipe.yaml").write_text("name: x\n")
    before = listing(tmp_path)
    with pytest.raises(OutputExistsError) as err:
        train(small(), out)
    assert "already holds a finished run" in str(err.value)
    assert "--overwrite_output_dir true" in str(err.value) and "only for a previous dpo_hub run" in str(
        err.value
    )
    assert listing(tmp_path) == before
    folders.check_writable(out, overwrite=True)  # a dpo_hub run may be replaced


def test_finalize_never_replaces_a_folder_that_became_foreign(tmp_path):
    stage = folders.fresh_staging(tmp_path / "out")
    (stage / "metrics.json").write_text("{}")
    user_files(tmp_path / "out")  # appeared while the run trained
    with pytest.raises(OutputExistsError, match="not a dpo_hub output; they were left untouched"):
        folders.finalize(stage, tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "my notes" and (stage / "metrics.json").exists()


def test_a_staging_folder_dpo_hub_did_not_make_is_never_removed(tmp_path):
    foreign = folders.staging_dir(tmp_path / "out")
    user_files(foreign)
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="not a staging folder dpo_hub made"):
        folders.fresh_staging(tmp_path / "out")
    with pytest.raises(OutputError, match="not a staging folder dpo_hub made"):
        train(small(), tmp_path / "out")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_a_checkpoints_folder_dpo_hub_did_not_make_is_never_removed(tmp_path, resume):
    user_files(checkpoints.folder_for(tmp_path / "out"))
    before = listing(tmp_path)
    with pytest.raises(RecipeError, match="is not a dpo_hub checkpoints folder.*never deletes files"):
        train(small(resume=resume), tmp_path / "out")
    assert listing(tmp_path) == before


def test_discard_removes_only_what_dpo_hub_writes(tmp_path):
    folder = tmp_path / "out.checkpoints"
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / checkpoints.RECIPE_FILE).write_text("abc\n")
    (folder / "mine.txt").write_text("keep")
    checkpoints.discard(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]


def test_merge_output_that_is_not_a_merge_is_refused(tmp_path):
    user_files(tmp_path / "merged")
    with pytest.raises(OutputExistsError, match="not a dpo_hub merge.*--overwrite replaces only"):
        folders.check_writable(tmp_path / "merged", True, "--output", "--overwrite", "merge.json", "merge")


# ---- 2. a failed start leaves nothing behind and never blocks its retry ------------------------------------
@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        pytest.param({"data.dataset": "{tmp}/empty.jsonl"}, DataError, "the file is empty", id="empty_file"),
        pytest.param({"data.dataset": "{tmp}/header.csv"}, DataError, "only a header line", id="header_only"),
        pytest.param({"lora.target_modules": "no_such_layer"}, Exception, "no_such_layer", id="lora_targets"),
        pytest.param({"data.limit": "2"}, DataError, "pair", id="too_few_pairs"),
        pytest.param({"dpo.loss_type": "exo_pair"}, Exception, "exo_pair|label_smoothing", id="trl_config"),
    ],
)
def test_a_failed_start_creates_nothing(tmp_path, changes, error, words):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n")
    before = listing(tmp_path)
    changes = {k: v.format(tmp=tmp_path) for k, v in changes.items()}
    kind = {"data.kind": "preferences"} if "data.dataset" in changes else {}
    with pytest.raises(error, match=words):
        train(small(**kind, **changes), tmp_path / "out")
    assert listing(tmp_path) == before, "no .out.incomplete, no out.checkpoints"


@pytest.mark.parametrize("with_lock_of", ["another recipe", "this recipe"])
def test_a_lock_without_checkpoints_never_blocks(tmp_path, with_lock_of):
    folder = tmp_path / "out.checkpoints"
    folder.mkdir()
    mine = small().fingerprint()
    (folder / checkpoints.RECIPE_FILE).write_text(
        ("0123456789ab" if with_lock_of == "another recipe" else mine) + "\n"
    )
    (folder / checkpoints.EVAL_BEFORE).write_text("{}")
    assert checkpoints.check(folder, mine, "auto") is None
    assert checkpoints.prepare(folder, mine, "auto") is None
    assert (folder / checkpoints.RECIPE_FILE).read_text().strip() == mine
    assert with_lock_of == "this recipe" or not (folder / checkpoints.EVAL_BEFORE).exists(), (
        "another recipe's eval is dropped"
    )


def test_a_lock_with_checkpoints_of_another_recipe_still_blocks(tmp_path):
    folder = tmp_path / "out.checkpoints"
    (folder / "checkpoint-5").mkdir(parents=True)
    (folder / checkpoints.RECIPE_FILE).write_text("0123456789ab\n")
    before = listing(tmp_path)
    with pytest.raises(RecipeError, match="holds checkpoints of recipe 0123456789ab"):
        checkpoints.check(folder, small().fingerprint(), "auto")
    assert listing(tmp_path) == before


def test_failed_run_then_fixed_rerun_trains_and_records_resolved_paths(tmp_path, monkeypatch):
    """Classes 2 and 6 in one training: an empty file fails leaving nothing; after fixing it the rerun,
    into ``~/out`` with a relative data path, trains; recipe.yaml repeats it from another folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "pairs.jsonl").write_text("")
    recipe = small(**{"data.dataset": "pairs.jsonl", "data.limit": 12, "output_dir": "~/out"})
    with pytest.raises(DataError, match="the file is empty"):
        train(recipe)
    assert not any((tmp_path / "home").glob("*out*")) and not (work / "~").exists()
    sample_rows(work / "pairs.jsonl", 12)
    out = train(recipe.override({"dpo.seed": 3}))  # a different recipe: an old lock would have refused it
    assert out == tmp_path / "home" / "out" and not (work / "~").exists()
    left = sorted(p.name for p in (tmp_path / "home").iterdir() if p.name not in (".cache", ".config"))
    assert left == ["out"], "no staging or checkpoints left"
    saved = Recipe.from_yaml(out / "recipe.yaml")
    assert saved.data.dataset == str(work / "pairs.jsonl"), "the data path is recorded resolved"
    monkeypatch.chdir(tmp_path)
    assert saved.fingerprint() == read_metrics(out)["fingerprint"], "the same file, the same fingerprint"
    assert check_recipe(saved.replace(output_dir=str(tmp_path / "again"))) is not None


# ---- 6. paths ----------------------------------------------------------------------------------------------
def test_tilde_is_expanded_in_output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Recipe.from_dict({"output_dir": "~/runs/x"}).output_dir == str(tmp_path / "runs" / "x")
    assert small().replace(output_dir="~/y").output_dir == str(tmp_path / "y")


@pytest.mark.parametrize("where", ["/proc/x", "/proc/1/x/y"])
def test_unwritable_place_is_one_clear_error(tmp_path, where):
    with pytest.raises(
        OutputError, match=f"output_dir {where} cannot be created: .* is not a writable folder"
    ):
        train(small(), where)
    with pytest.raises(RecipeError, match="is not a writable folder"):
        check_recipe(small(output_dir=where))
    assert not Path(where).parent.joinpath(".x.incomplete").exists()


def test_unwritable_place_from_the_command_line_has_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "dpo_hub", "train", "--model", "embedded", "--data.dataset", "embedded"]
    proc = run([*cmd, "--output_dir", "/proc/x"], offline_env(tmp_path))
    assert proc.returncode != 0 and "/proc/x" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[
        -2000:
    ]


def test_relative_and_absolute_data_paths_fingerprint_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    sample_rows(tmp_path / "p.jsonl", 4)
    fingerprints = {
        small(**{"data.dataset": name}).fingerprint()
        for name in ("p.jsonl", "./p.jsonl", str(tmp_path / "p.jsonl"), "~/p.jsonl")
    }
    assert len(fingerprints) == 1
    assert small(**{"data.dataset": "p.jsonl"}).to_dict()["data"]["dataset"] == "p.jsonl", (
        "the recipe keeps what was written"
    )
    assert small().fingerprint() == RECIPE.override(SMALL).fingerprint()
    resolved, _ = run_module.resolve_recipe(small(**{"data.dataset": "p.jsonl"}))
    assert resolved.data.dataset == str(tmp_path / "p.jsonl")
    assert run_module.resolve_recipe(small())[0].data.dataset == "embedded", "not a path: unchanged"


# ---- 7. resume on changed data -----------------------------------------------------------------------------
def test_check_data_names_what_changed(tmp_path):
    ckpt = tmp_path / "out.checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt.parent / checkpoints.DATA_FILE).write_text(
        json.dumps({"sha256": "a", "train_pairs": 9, "eval_pairs": 3})
    )
    checkpoints.check_data(ckpt, {"sha256": "a", "train_pairs": 9, "eval_pairs": 3})
    checkpoints.check_data(None, {"sha256": "b", "train_pairs": 1, "eval_pairs": 0})
    with pytest.raises(
        DataError, match="9 train pairs before, 7 now; 3 eval pairs before, 2 now.*--resume never"
    ):
        checkpoints.check_data(ckpt, {"sha256": "b", "train_pairs": 7, "eval_pairs": 2})
    with pytest.raises(DataError, match="same counts, different content"):
        checkpoints.check_data(ckpt, {"sha256": "b", "train_pairs": 9, "eval_pairs": 3})


def test_resume_refuses_data_edited_since_the_crash(tmp_path, monkeypatch):
    data = sample_rows(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "out"
    recipe = small(**{"data.dataset": str(data), "dpo.max_steps": 2, "dpo.save_steps": 1})

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after training")

    monkeypatch.setattr(run_module, "_finish", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(recipe, out)
    monkeypatch.undo()
    saves = checkpoints.folder_for(out)
    assert checkpoints.has_checkpoints(saves) and (saves / checkpoints.DATA_FILE).is_file()
    recorded = json.loads((saves / checkpoints.DATA_FILE).read_text())
    assert recorded["train_pairs"] + recorded["eval_pairs"] == 16

    for rows, edit, words in [
        (12, None, f"{recorded['train_pairs']} train pairs before, 9 now"),
        (16, 5, "same counts, different content"),
    ]:
        sample_rows(data, rows, edit)
        before = listing(tmp_path)
        with pytest.raises(
            DataError, match=f"data changed since the checkpoints in {saves} were written"
        ) as err:
            train(recipe, out)
        assert (
            words in str(err.value)
            and "--resume never" in str(err.value)
            and "new --output_dir" in str(err.value)
        )
        assert listing(tmp_path) == before, "the checkpoints and the data are left as they were"

    sample_rows(data, 16)  # the original rows: resumes and finishes
    assert train(recipe, out) == out
    assert read_metrics(out)["train"]["global_step"] >= 2 and not saves.exists()


def test_resume_never_starts_over_on_changed_data(tmp_path):
    saves = checkpoints.folder_for(tmp_path / "out")
    (saves / "checkpoint-1").mkdir(parents=True)
    (saves / checkpoints.RECIPE_FILE).write_text(small().fingerprint() + "\n")
    (saves / checkpoints.DATA_FILE).write_text(
        json.dumps({"sha256": "old", "train_pairs": 1, "eval_pairs": 1})
    )
    new = {"sha256": "new", "train_pairs": 2, "eval_pairs": 1}
    assert checkpoints.prepare(saves, small().fingerprint(), "never", new) is None
    assert not (saves / "checkpoint-1").exists()
    assert json.loads((saves / checkpoints.DATA_FILE).read_text()) == new


# ---- 4. trl's and peft's refusals come before anything is written ------------------------------------------
# (changes, words of the one-line error); the recipe is built (class 5's rules fail there), then trained.
REFUSED = {
    "exo_pair_without_label_smoothing": (
        {"dpo.loss_type": "exo_pair"},
        ["dpo.loss_type=exo_pair", "dpo.label_smoothing", "0.001"],
    ),
    "sync_ref_model_with_lora": ({"dpo.sync_ref_model": "true"}, ["dpo.sync_ref_model", "LoRA", "remove"]),
    "lm_head_target": (
        {"lora.target_modules": "c_attn,lm_head"},
        ["lora.target_modules", "lm_head", "remove"],
    ),
    "effective_batch_not_divisible": (
        {"dpo.per_device_train_batch_size": "2", "dpo.effective_batch_size": "3"},
        ["dpo.effective_batch_size=3", "dpo.per_device_train_batch_size", "per-device batch 2 x 1"],
    ),
    "f_divergence_with_bco_pair": (
        {"dpo.loss_type": "bco_pair", "dpo.f_divergence_type": "js_divergence"},
        ["dpo.f_divergence_type=js_divergence", "dpo.loss_type is bco_pair"],
    ),
    "weighting_with_aot": (
        {"dpo.loss_type": "aot", "dpo.use_weighting": "true"},
        ["dpo.use_weighting", "dpo.loss_type=aot"],
    ),
    "router_aux_loss_without_experts": (
        {"dpo.router_aux_loss_coef": "0.01"},
        ["dpo.router_aux_loss_coef=0.01", "not a mixture of experts", "remove"],
    ),
    "load_best_model_with_other_strategies": (
        {"dpo.load_best_model_at_end": "true", "dpo.eval_strategy": "epoch"},
        ["trl.DPOConfig refuses", "dpo.save_strategy", "dpo.load_best_model_at_end", "strategy to match"],
    ),
    "layers_to_transform_with_all_linear": (
        {"lora.preset": "all_linear", "lora.layers_to_transform": "[0]"},
        ["peft.LoraConfig refuses", "lora.target_modules", "lora.layers_to_transform"],
    ),
    "liger_fused_cross_entropy": (
        {"dpo.use_liger_kernel": "true", "dpo.liger_kernel_config": "{fused_linear_cross_entropy: true}"},
        ["dpo.liger_kernel_config", "fused_linear_cross_entropy"],
    ),
}


@pytest.mark.parametrize(("changes", "words"), REFUSED.values(), ids=REFUSED.keys())
def test_what_trl_or_peft_refuse_fails_before_anything_is_written(tmp_path, changes, words):
    before = listing(tmp_path)
    with pytest.raises(RecipeError) as err:
        train(small(**changes), tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert listing(tmp_path) == before, "nothing staged, no checkpoints folder"


def _trl_trainer(tmp_path: Path, dpo: dict, targets: list[str] | None = None) -> None:
    """trl's own DPOTrainer on the embedded model with LoRA, built with ``dpo`` (raises what trl refuses)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model = embedded.build_model()
    rows = [{"prompt": "Hi?", "chosen": " Hello.", "rejected": " No."}] * 2
    DPOTrainer(
        model=model,
        args=DPOConfig(str(tmp_path / "trl"), use_cpu=True, report_to="none", max_steps=1, **dpo),
        train_dataset=Dataset.from_list(rows),
        processing_class=embedded.load_tokenizer(),
        peft_config=LoraConfig(target_modules=targets or ["c_attn"], fan_in_fan_out=True),
    )


@pytest.mark.parametrize(
    ("dpo", "targets"),
    [
        pytest.param({"loss_type": ["exo_pair"]}, None, id="exo_pair"),
        pytest.param({"sync_ref_model": True}, None, id="sync_ref_model"),
        pytest.param({}, ["c_attn", "lm_head"], id="lm_head"),
        pytest.param(
            {"loss_type": ["bco_pair"], "f_divergence_type": "js_divergence"}, None, id="f_divergence"
        ),
        pytest.param({"loss_type": ["aot"], "use_weighting": True}, None, id="weighting_aot"),
        pytest.param({"router_aux_loss_coef": 0.01}, None, id="router_aux_loss"),
        pytest.param(
            {"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": True}},
            None,
            id="liger",
            marks=pytest.mark.skipif(
                not __import__("importlib").util.find_spec("liger_kernel"),
                reason="liger-kernel not installed",
            ),
        ),
    ],
)
def test_each_restated_rule_is_still_trls(tmp_path, dpo, targets):
    """dpo_hub restates these trainer-time rules of trl to refuse them early: trl must still refuse them (if
    this fails, trl dropped a rule: drop it from dpo_hub/config/combinations.py or preflight too)."""
    with pytest.raises((ValueError, NotImplementedError)):
        _trl_trainer(tmp_path, dpo, targets)


def test_cli_refusal_of_a_trl_combination_is_one_line_exit_2(tmp_path):
    out = tmp_path / "o"
    for argv in (["--dpo.loss_type", "exo_pair"], ["--lora.target_modules", "c_attn,lm_head"]):
        proc = run(
            [
                sys.executable,
                "-m",
                "dpo_hub.recipes.gpt2_ultrafeedback",
                *CLI_SMALL,
                *argv,
                "--output_dir",
                str(out),
            ],
            offline_env(tmp_path),
            cwd=tmp_path,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[
            -2000:
        ]
        assert argv[1].split(",")[-1] in errors[0]
    assert {p.name for p in tmp_path.iterdir()} <= {"hf_home"}, "nothing but the test's own Hub cache"


CLI_SMALL = [
    "--model",
    "embedded",
    "--data.dataset",
    "embedded",
    "--data.limit",
    "16",
    "--dpo.max_steps",
    "1",
]


# ---- 5. settings that would be ignored or overridden are refused -------------------------------------------
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        pytest.param(
            {"dpo.label_smoothing": "0.1"},
            ["dpo.label_smoothing=0.1", "no effect", "dpo.loss_type=sigmoid", "robust"],
            id="smoothing_sigmoid",
        ),
        pytest.param(
            {"dpo.loss_type": "ipo", "dpo.label_smoothing": "0.2"},
            ["dpo.label_smoothing=0.2", "dpo.loss_type=ipo"],
            id="smoothing_ipo",
        ),
        pytest.param(
            {"dpo.loss_type": "sigmoid,sft", "dpo.label_smoothing": "0.1"},
            ["dpo.loss_type=sigmoid,sft"],
            id="smoothing_combination",
        ),
        pytest.param(
            {"dpo.gradient_accumulation_steps": "2", "dpo.effective_batch_size": "4"},
            ["dpo.gradient_accumulation_steps=2", "dpo.effective_batch_size=4", "only one"],
            id="accumulation_and_effective_batch",
        ),
        pytest.param(
            {"lora.loftq_config": "{loftq_bitz: 4}"},
            ["lora.loftq_config", "'loftq_bitz'", "did you mean loftq_bits"],
            id="loftq_typo",
        ),
        pytest.param(
            {"dpo.accelerator_config": "{split_batchs: true}"},
            ["dpo.accelerator_config", "'split_batchs'", "did you mean split_batches"],
            id="accelerator_config_typo",
        ),
        pytest.param(
            {"dpo.gradient_checkpointing_kwargs": {"use_reentrent": False}},
            ["dpo.gradient_checkpointing_kwargs", "did you mean use_reentrant"],
            id="checkpointing_kwargs_typo",
        ),
        pytest.param({"dpo.padding_free": "true"}, ["dpo.padding_free", "no effect"], id="padding_free"),
        pytest.param(
            {"lora.loftq_config": "{loftq_bits: 4}"},
            ["lora.loftq_config has no effect", "lora.init_lora_weights: loftq"],
            id="loftq_without_loftq_init",
        ),
    ],
)
def test_a_setting_that_would_be_ignored_or_overridden_is_refused(changes, words):
    with pytest.raises(RecipeError) as err:
        small(**changes)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"dpo.loss_type": "robust", "dpo.label_smoothing": "0.1"},
        {"dpo.loss_type": "sigmoid,exo_pair", "dpo.label_smoothing": "0.001"},
        {"dpo.effective_batch_size": "4"},
        {"dpo.gradient_accumulation_steps": "2"},
        {"lora.init_lora_weights": "loftq", "lora.loftq_config": "{loftq_bits: 4}"},
        {"lora.rank_pattern": "{c_attn: 8}"},
        {"dpo.accelerator_config": "{split_batches: true}"},
    ],
)
def test_settings_that_take_effect_are_accepted(changes):
    recipe = small(**changes)
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_key_given_twice_in_a_recipe_file_names_the_file_line_and_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: embedded\ndpo:\n  beta: 0.1\n  learning_rate: 1e-4\n  beta: 0.2\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: line 5: key 'beta' is given twice \(first on line 3\)"):
        Recipe.from_yaml(path)
    path.write_text("dpo: {beta: 0.1}\nlora: {r: 4}\ndpo: {seed: 1}\n")
    with pytest.raises(RecipeError, match=r"line 3: key 'dpo' is given twice"):
        Recipe.from_yaml(path)
    path.write_text("dpo: {beta: 0.2}\nlora: {r: 8}\n")  # the same name in two groups is no repeat
    assert Recipe.from_yaml(path).dpo.beta == 0.2


# ---- 9. pushes that would break a repo are refused --------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real finished run of one step (its adapter's base is the embedded model's Hub id)."""
    return train(small(), tmp_path_factory.mktemp("finished") / "run")


def run_with_base(run_dir: Path, folder: Path, base: str) -> Path:
    """A copy of ``run_dir`` whose adapter names ``base`` as its base model (as a run trained from it)."""
    import shutil

    shutil.copytree(run_dir, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return folder


def push(local_hub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = local_hub.client_env(hf_home=tmp_path / "hf_home")
    proc = run([sys.executable, "-m", "dpo_hub", "push", *args], env, cwd=tmp_path)
    assert "hf_test_write" not in proc.stdout + proc.stderr, "the token reached the output"
    return proc


def remote(local_hub, tmp_path: Path, repo: str) -> tuple[str | None, dict | None, str]:
    """The repo's head commit, adapter config and card as the Hub serves them (None: no such repo)."""
    from huggingface_hub import HfApi

    env = local_hub.client_env(hf_home=tmp_path / "hf_home")
    api = HfApi(endpoint=env["HF_ENDPOINT"], token=env["HF_TOKEN"])
    if not api.repo_exists(repo):
        return None, None, ""
    folder = tmp_path / f"download-{time.monotonic_ns()}"
    config = api.hf_hub_download(repo, "adapter_config.json", local_dir=folder)
    card = api.hf_hub_download(repo, "README.md", local_dir=folder)
    return api.model_info(repo).sha, json.loads(Path(config).read_text()), Path(card).read_text()


def test_push_of_an_adapter_of_a_local_base_needs_its_hub_id(local_hub, finished_run, tmp_path):
    base = tmp_path / "my-model"
    base.mkdir()
    run_dir = run_with_base(finished_run, tmp_path / "run", str(base))
    before = listing(run_dir)
    for args, words in (
        ([], ["a local path others cannot load it from", "--base REPO_ID", str(base), "Nothing was pushed"]),
        (["--base", "not a repo!"], ["--base='not a repo!'"]),
    ):
        refused = push(local_hub, tmp_path, str(run_dir), "tester/local-base", *args)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 1 and len(errors) == 1 and "Traceback" not in refused.stderr
        assert all(w in errors[0] for w in words), errors[0]
        assert remote(local_hub, tmp_path, "tester/local-base")[0] is None, "no repo was created"
    pushed = push(
        local_hub, tmp_path, str(run_dir), "tester/local-base", "--base", embedded.EMBEDDED_MODEL_ID
    )
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    head, config, card = remote(local_hub, tmp_path, "tester/local-base")
    assert config["base_model_name_or_path"] == embedded.EMBEDDED_MODEL_ID
    assert f"base_model: {embedded.EMBEDDED_MODEL_ID}" in card and str(base) not in card
    assert listing(run_dir) == before, "the run's own files are unchanged"
    again = push(local_hub, tmp_path, str(run_dir), "tester/local-base", "--base", embedded.EMBEDDED_MODEL_ID)
    assert again.returncode == 0 and again.stdout.startswith(
        "nothing changed: tester/local-base already holds"
    )
    assert remote(local_hub, tmp_path, "tester/local-base")[0] == head


def test_push_never_replaces_an_adapter_of_another_base_without_force(local_hub, finished_run, tmp_path):
    first = push(local_hub, tmp_path, str(finished_run), "tester/one-base")
    assert first.returncode == 0 and not first.stdout.startswith("nothing changed"), first.stderr[-2000:]
    head, config, _ = remote(local_hub, tmp_path, "tester/one-base")
    other = run_with_base(finished_run, tmp_path / "other", "someone/other-model")
    refused = push(local_hub, tmp_path, str(other), "tester/one-base")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 1 and len(errors) == 1, refused.stderr[-2000:]
    assert all(
        w in errors[0]
        for w in (f"base model {config['base_model_name_or_path']!r}", "'someone/other-model'", "--force")
    )
    assert remote(local_hub, tmp_path, "tester/one-base")[0] == head, "the repo keeps its head"
    forced = push(local_hub, tmp_path, str(other), "tester/one-base", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (
        remote(local_hub, tmp_path, "tester/one-base")[1]["base_model_name_or_path"] == "someone/other-model"
    )


def test_checkpoint_files_get_the_umask_mode_and_still_verify(tmp_path):
    """Savers writing through a temporary file leave 0600; a checkpoint is as readable as the run's files."""
    from types import SimpleNamespace

    step = tmp_path / "checkpoint-1"
    step.mkdir()
    (step / "adapter_model.safetensors").write_bytes(b"weights")
    (step / "adapter_model.safetensors").chmod(0o600)
    previous = os.umask(0o022)
    try:
        checkpoints.Checkpointing().on_save(
            SimpleNamespace(output_dir=str(tmp_path)),
            SimpleNamespace(global_step=1, is_world_process_zero=True),
            None,
        )
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in step.iterdir()} == {
        "adapter_model.safetensors": 0o644,
        checkpoints.MARKER: 0o644,
    }
    assert checkpoints.newest_complete(tmp_path) == step, "the marker's checksums still hold"


def test_compare_pairs_errors_name_compares_flags(finished_run, tmp_path):
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"question": "q", "chosen": "a", "rejected": "b"}) + "\n"
    )
    (tmp_path / "pairs.csv").write_text("prompt;chosen;rejected\nq;a;b\n")
    for pairs, words in (
        ("pairs.jsonl", ["missing column(s) ['prompt']", "--prompt-column"]),
        ("pairs.csv", ["';'-separated", "save it with commas"]),
    ):
        proc = run(
            [
                sys.executable,
                "-m",
                "dpo_hub",
                "compare",
                str(finished_run),
                "--pairs",
                pairs,
                "--output",
                "cmp",
            ],
            offline_env(tmp_path),
            cwd=tmp_path,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[
            -2000:
        ]
        assert all(w in errors[0] for w in words) and "data." not in errors[0], errors[0]
        assert not (tmp_path / "cmp").exists()
    done = run(
        [sys.executable, "-m", "dpo_hub", "compare", str(finished_run), "--prompt", "Hi?", "--output", "cmp"],
        offline_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [
        line for line in done.stderr.splitlines() if "Warning" in line or "kernels-community" in line
    ], "no library noise leaks: " + done.stderr[-2000:]


def test_compare_scores_other_pairs_whole_by_default(finished_run, tmp_path, caplog):
    """Class 11: --pairs are not cut to the run's training max_length (64 here) unless asked."""
    from dpo_hub import compare_run

    rows = [
        {"prompt": f"Question {i}?", "chosen": " A long answer" * (40 if i == 0 else 1), "rejected": " No."}
        for i in range(3)
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = compare_run(finished_run, prompts=[], pairs=str(tmp_path / "pairs.jsonl"))
    assert whole.preference["truncated"] == 0 and whole.settings["max_length"] > small().dpo.max_length
    with caplog.at_level("WARNING", logger="dpo_hub"):
        cut = compare_run(finished_run, prompts=[], pairs=str(tmp_path / "pairs.jsonl"), max_length=64)
    assert cut.preference["truncated"] == 1 and cut.preference["n_pairs"] == 3
    assert "of 3 pairs, 0 are skipped (the prompt alone fills it) and 1 truncated" in caplog.text


def test_repo_root_is_untouched_by_these_tests():
    assert not (REPO / "~").exists() and not any(REPO.glob(".*.incomplete"))
    assert os.path.isdir(REPO / "dpo_hub")
