"""Every bad input gets one clear error naming the key, file, row or column at fault and what to do, before
loading."""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import pytest
from conftest import RECIPE_MODULE, offline_env, run

from dpo_hub import (
    DataError,
    Preferences,
    Recipe,
    RecipeError,
    SourceUnavailableError,
    UltraFeedback,
    embedded,
)
from dpo_hub.cli.launch import recipe_from_argv
from dpo_hub.data.adapters import prepare
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.runtime import wants_cpu
from dpo_hub.training import preflight

# ---- recipe values: (changes, words the message must hold: the key, the rule, what to do) ------------------
BAD_VALUES = {
    "beta_zero": ({"dpo.beta": "0"}, ["dpo.beta=0.0", "> 0", "0.1 is usual"]),
    "beta_negative": ({"dpo.beta": "-1"}, ["dpo.beta=-1.0", "> 0"]),
    "beta_nan": ({"dpo.beta": "nan"}, ["dpo.beta=nan", "finite"]),
    "beta_inf": ({"dpo.beta": "inf"}, ["dpo.beta=inf", "finite"]),
    "lr_zero": ({"dpo.learning_rate": "0"}, ["dpo.learning_rate=0.0", "> 0", "usual"]),
    "lr_negative": ({"dpo.learning_rate": "-1"}, ["dpo.learning_rate=-1.0", "> 0"]),
    "lr_nan": ({"dpo.learning_rate": "nan"}, ["dpo.learning_rate=nan", "finite"]),
    "label_smoothing_half": ({"dpo.label_smoothing": "0.5"}, ["dpo.label_smoothing=0.5", "[0, 0.5)"]),
    "label_smoothing_negative": ({"dpo.label_smoothing": "-0.1"}, ["dpo.label_smoothing", "[0, 0.5)"]),
    "lora_r_zero": ({"lora.r": "0"}, ["lora.r=0", ">= 1"]),
    "lora_alpha_zero": ({"lora.lora_alpha": "0"}, ["lora.lora_alpha=0", "> 0"]),
    "lora_dropout_one": ({"lora.lora_dropout": "1"}, ["lora.lora_dropout=1.0", "[0, 1)"]),
    "lora_dropout_negative": ({"lora.lora_dropout": "-0.1"}, ["lora.lora_dropout", "[0, 1)"]),
    "lora_bias": ({"lora.bias": "some"}, ["lora.bias='some'", "none, all, lora_only"]),
    "lora_targets_empty": ({"lora.target_modules": ""}, ["lora.target_modules", "all-linear"]),
    "eval_fraction_negative": ({"data.eval_fraction": "-0.1"}, ["data.eval_fraction=-0.1", "[0, 1)"]),
    "eval_fraction_one": ({"data.eval_fraction": "1"}, ["data.eval_fraction=1.0", "0 for none"]),
    "eval_fraction_nan": ({"data.eval_fraction": "nan"}, ["data.eval_fraction=nan", "finite"]),
    "limit_zero": ({"data.limit": "0"}, ["data.limit=0", "null: every row"]),
    "data_split_empty": ({"data.split": " "}, ["data.split", "train"]),
    "data_format": ({"data.format": "html"}, ["data.format='html'", "text, chat"]),
    "max_length_tiny": ({"dpo.max_length": "8"}, ["dpo.max_length=8", ">= 16"]),
    "train_batch_zero": (
        {"dpo.per_device_train_batch_size": "0"},
        ["dpo.per_device_train_batch_size=0", ">= 1"],
    ),
    "eval_batch_zero": (
        {"dpo.per_device_eval_batch_size": "0"},
        ["dpo.per_device_eval_batch_size=0", ">= 1"],
    ),
    "accumulation_zero": (
        {"dpo.gradient_accumulation_steps": "0"},
        ["dpo.gradient_accumulation_steps=0", ">= 1"],
    ),
    "save_steps_zero": ({"dpo.save_steps": "0"}, ["dpo.save_steps=0", ">= 1"]),
    "save_total_limit_zero": ({"dpo.save_total_limit": "0"}, ["dpo.save_total_limit=0", ">= 1"]),
    "logging_steps_zero": ({"dpo.logging_steps": "0"}, ["dpo.logging_steps=0", ">= 1"]),
    "eval_steps_zero": ({"dpo.eval_steps": "0"}, ["dpo.eval_steps=0", "null"]),
    "effective_batch_zero": ({"dpo.effective_batch_size": "0"}, ["dpo.effective_batch_size=0", "null"]),
    "epochs_zero": ({"dpo.num_train_epochs": "0"}, ["dpo.num_train_epochs=0.0", "dpo.max_steps"]),
    "max_steps_zero": ({"dpo.max_steps": "0"}, ["dpo.max_steps=0", "-1"]),
    "warmup_negative": ({"dpo.warmup_steps": "-1"}, ["dpo.warmup_steps=-1", ">= 0"]),
    "eval_strategy": (
        {"dpo.eval_strategy": "epochs"},
        ["dpo.eval_strategy='epochs'", "did you mean 'epoch'"],
    ),
    "save_strategy": ({"dpo.save_strategy": "always"}, ["dpo.save_strategy='always'", "no, steps, epoch"]),
    "scheduler": (
        {"dpo.lr_scheduler_type": "cosin"},
        ["dpo.lr_scheduler_type='cosin'", "did you mean 'cosine'"],
    ),
    "precision": ({"dpo.precision": "fp64"}, ["dpo.precision='fp64'", "fp32, bf16, fp16, auto"]),
    "loss_type": ({"dpo.loss_type": "sigmod"}, ["dpo.loss_type='sigmod'", "sigmoid"]),
    "max_new_tokens_zero": ({"generation.max_new_tokens": "0"}, ["generation.max_new_tokens=0", ">= 1"]),
    "temperature_zero": ({"generation.temperature": "0"}, ["generation.temperature=0.0", "do_sample false"]),
    "temperature_nan_greedy": (
        {"generation.do_sample": "false", "generation.temperature": "nan"},
        ["generation.temperature=nan", "finite"],
    ),
    "top_p_zero": ({"generation.top_p": "0"}, ["generation.top_p=0.0", "(0, 1]"]),
    "top_p_above_one": ({"generation.top_p": "1.5"}, ["generation.top_p=1.5", "(0, 1]"]),
    "top_k_negative": ({"generation.top_k": "-1"}, ["generation.top_k=-1", "0 turns top-k off"]),
    "prompt_empty": ({"generation.prompts": " "}, ["generation.prompts", "[] for no generations"]),
    "output_dir_empty": ({"output_dir": " "}, ["output_dir", "non-empty"]),
    "threads_zero": ({"threads": "0"}, ["threads=0", ">= 1 or null"]),
    "resume_empty": ({"resume": ""}, ["resume", "auto, never or a checkpoint folder"]),
    "push_to_hub_invalid": ({"push_to_hub": "not a repo!"}, ["push_to_hub='not a repo!'", "NAMESPACE/NAME"]),
    "preferences_column_empty": (
        {"data.kind": "preferences", "data.prompt_column": ""},
        ["data.prompt_column", "column"],
    ),
}


@pytest.mark.parametrize("changes,words", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_names_the_key_and_the_rule(changes, words):
    with pytest.raises(RecipeError) as err:
        RECIPE.override(changes, source="command line")
    message = str(err.value)
    assert message.startswith("command line: ") and all(word in message for word in words), message


def test_edges_of_each_rule_are_accepted():
    """The rules refuse only what cannot work: the limits themselves pass."""
    recipe = RECIPE.override(
        {
            "dpo.num_train_epochs": "0",
            "dpo.max_steps": "5",
            "generation.do_sample": "false",
            "generation.temperature": "0",
            "generation.top_k": "0",
            "generation.top_p": "1",
            "dpo.loss_type": "robust",  # a loss that reads label_smoothing (sigmoid ignores it)
            "dpo.label_smoothing": "0.49",
            "dpo.warmup_steps": "0",
            "data.eval_fraction": "0",
            "dpo.max_length": "16",
            "push_to_hub": "user/repo",
            "generation.prompts": "[]",
            "lora.lora_dropout": "0",
            "dpo.lr_scheduler_type": "greedy",
        }
    )
    assert recipe.dpo.max_steps == 5 and recipe.generation.prompts == () and recipe.push_to_hub == "user/repo"


# ---- types and structure -----------------------------------------------------------------------------------
BAD_TYPES = {
    "float_text": ({"dpo.beta": "high"}, ["dpo.beta", "float", "high"]),
    "int_fraction": ({"lora.r": "1.5"}, ["lora.r", "int", "1.5"]),
    "bool_for_float": ({"dpo.beta": True}, ["dpo.beta", "float", "bool"]),
    "bool_text": ({"dpo.gradient_checkpointing": "maybe"}, ["dpo.gradient_checkpointing", "bool"]),
    "mapping_for_text": ({"output_dir": {"a": 1}}, ["output_dir", "str", "dict"]),
    "number_for_list": ({"lora.target_modules": 3}, ["lora.target_modules", "list", "int"]),
    "group_not_mapping": ({"dpo": 3}, ["dpo must be a mapping", "dpo.beta", "got int 3"]),
    "data_group_list": ({"data": [1, 2]}, ["data must be a mapping", "got list"]),
    "key_not_text": ({1: 2}, ["recipe key 1", "dpo.beta"]),
    "nested_unknown": ({"dpo": {"betta": 0.2}}, ["dpo.betta", "did you mean dpo.beta"]),
    "nested_unknown_data": (
        {"data": {"kind": "preferences", "prompt_colum": "q"}},
        ["data.prompt_colum", "data.prompt_column"],
    ),
    "kind_unknown": ({"data.kind": "csv"}, ["data.kind='csv'", "preferences"]),
    "kind_not_text": ({"data.kind": ["x"]}, ["data.kind=['x']", "hh_rlhf"]),
    "key_of_other_kind": (
        {"data.kind": "hh_rlhf", "data.separator": ": "},  # every kind has data.format now
        ["data.separator", "data.kind=ultrafeedback", "data.kind=hh_rlhf"],
    ),
}


@pytest.mark.parametrize("changes,words", BAD_TYPES.values(), ids=BAD_TYPES.keys())
def test_bad_type_or_structure_names_the_key(changes, words):
    with pytest.raises(RecipeError) as err:
        RECIPE.override(changes, source="my.yaml")
    assert str(err.value).startswith("my.yaml: ") and all(w in str(err.value) for w in words), str(err.value)


BAD_FILES = {
    "a_list": ("- a\n- b\n", ["bad.yaml", "mapping", "list"]),
    "a_scalar": ("just text\n", ["bad.yaml", "mapping", "str"]),
    "not_yaml": ("dpo: [1\n", ["bad.yaml", "not valid YAML"]),
    "group_a_number": ("dpo: 3\n", ["bad.yaml", "dpo must be a mapping"]),
    "value_nan": ("dpo:\n  beta: .nan\n", ["bad.yaml", "dpo.beta=nan", "finite"]),
}


@pytest.mark.parametrize("text,words", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_recipe_file_names_the_file(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_missing_recipe_file_names_it(tmp_path):
    with pytest.raises(RecipeError, match=r"nope\.yaml: cannot read the recipe file.*check the path"):
        Recipe.from_yaml(tmp_path / "nope.yaml")


def test_nested_mappings_are_flattened_and_switching_kind_drops_the_limit():
    recipe = RECIPE.override(
        {"dpo": {"beta": "0.3"}, "data": {"kind": "preferences", "dataset": "mine.jsonl"}}
    )
    assert recipe.dpo.beta == 0.3 and isinstance(recipe.data, Preferences)
    assert recipe.data.limit is None, "UltraFeedback's 2,000-row limit must not cut a user's file"
    assert recipe.data.eval_fraction == RECIPE.data.eval_fraction and Preferences().limit is None
    assert UltraFeedback().limit == 2000


def test_values_starting_with_dashes_pass_as_key_equals_value():
    recipe = recipe_from_argv(RECIPE, ["--output_dir=--odd", "--name=--x"])
    assert (recipe.output_dir, recipe.name) == ("--odd", "--x")
    with pytest.raises(RecipeError, match="--output_dir needs a value .* or --output_dir=--VALUE"):
        recipe_from_argv(RECIPE, ["--output_dir", "--odd"])


# ---- data --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return embedded.load_tokenizer()


def pair(i: int, **changes) -> dict:
    return {
        "prompt": f"Question {i}?",
        "chosen": f"Kind answer {i}.",
        "rejected": f"Rude answer {i}.",
        **changes,
    }


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD = [pair(i) for i in range(6)]
BAD_DATA = {
    "jsonl_broken_line": (
        "bad.jsonl",
        jsonl(GOOD[:2]) + b'{"prompt": "x", "chosen": \n' + jsonl(GOOD[2:]),
        ["bad.jsonl", "line 3", "not valid JSON", "one JSON object"],
    ),
    "jsonl_not_object": (
        "bad.jsonl",
        jsonl(GOOD[:1]) + b'["a", "b"]\n',
        ["bad.jsonl", "line 2", "list", "object"],
    ),
    "json_broken": (
        "bad.json",
        json.dumps(GOOD, indent=1).replace('"rejected"', "rejected", 1).encode(),
        ["bad.json", "line 5", "not valid JSON"],
    ),
    "json_scalar": ("bad.json", b"42", ["bad.json", "JSON int", "list of row objects"]),
    "not_utf8": (
        "bad.jsonl",
        jsonl(GOOD[:1]) + '{"prompt": "caf\xe9"}\n'.encode("latin-1"),
        ["bad.jsonl", "line 2", "byte", "not UTF-8", "save the file as UTF-8"],
    ),
    "csv_not_utf8": ("bad.csv", b"prompt,chosen,rejected\nq,\xff\xfe,r\n", ["bad.csv", "line 2", "UTF-8"]),
    "empty": ("bad.jsonl", b"", ["bad.jsonl", "empty", "one row per preference pair"]),
    "blank": ("bad.jsonl", b"\n  \n", ["bad.jsonl", "empty"]),
    "csv_header_only": ("bad.csv", b"prompt,chosen,rejected\n", ["bad.csv", "no rows"]),
    "csv_semicolons": (
        "bad.csv",
        b"prompt;chosen;rejected\nq;a;b\nr;c;d\n",
        ["bad.csv", "one column 'prompt;chosen;rejected'", "';'-separated", "save it with commas"],
    ),
    "csv_tabs": ("bad.csv", b"prompt\tchosen\trejected\nq\ta\tb\n", ["bad.csv", "'\\t'-separated"]),
    "missing_column": (
        "bad.jsonl",
        jsonl([{"prompt": "p", "chosen": "c", "answer_b": "r"}]),
        ["bad.jsonl", "['rejected']", "answer_b", "data.rejected_column"],
    ),
    "all_dropped": (
        "bad.jsonl",
        jsonl(
            [
                pair(0, chosen=1),
                pair(1, chosen=""),
                pair(2, rejected=None),
                pair(3, chosen="same", rejected="same"),
            ]
        ),
        [
            "all 4 rows dropped",
            "1 chosen is not text (int) (e.g. row 0)",
            "1 chosen is empty (e.g. row 1)",
            "1 rejected is missing (e.g. row 2)",
            "1 chosen identical to rejected",
            "Fix those rows",
        ],
    ),
    "one_pair_left": (
        "bad.jsonl",
        jsonl([pair(0), pair(1, chosen={"text": "x"})]),
        ["only 1 usable pair", "chosen is not text (dict) (e.g. row 1)", "at least 2"],
    ),
    "split_too_small": (
        "bad.jsonl",
        jsonl(GOOD[:3]),
        ["3 pairs leave 1 for training", "data.eval_fraction=0.5", "lower data.eval_fraction"],
    ),
}


@pytest.mark.parametrize("name,content,words", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_names_the_file_and_place(tmp_path, tokenizer, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        prepare(Preferences(dataset=str(path), eval_fraction=0.5, split_by=None), tokenizer)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(
    "adapter,words",
    [
        (Preferences(dataset="TMP/nope.jsonl"), ["nope.jsonl", "file not found", "data.dataset"]),
        (Preferences(dataset="TMP/pairs.txt"), ["pairs.txt", "unsupported file type", ".jsonl"]),
        (Preferences(dataset=""), ["data.dataset is empty", "local file"]),
        (
            Preferences(dataset="TMP/pairs.jsonl", prompt_column="question"),
            ["['question']", "found", "prompt_column"],
        ),
        (
            Preferences(dataset="TMP/pairs.jsonl", split_by="qid"),
            ["'qid' is not a column", "null to split by row"],
        ),
    ],
    ids=["not_found", "unsupported", "no_dataset", "misnamed_column", "split_column"],
)
def test_bad_source_settings_name_what_to_change(tmp_path, tokenizer, adapter, words):
    (tmp_path / "pairs.jsonl").write_bytes(jsonl(GOOD))
    (tmp_path / "pairs.txt").write_text("hi")
    adapter = dataclasses.replace(adapter, dataset=adapter.dataset.replace("TMP", str(tmp_path)))
    with pytest.raises(DataError) as err:
        prepare(adapter, tokenizer)
    assert all(w in str(err.value) for w in words), str(err.value)


def conversation(*roles: str, answer: str = "Fine.") -> list[dict]:
    return [
        {"role": r, "content": answer if i == len(roles) - 1 else f"{r} text"} for i, r in enumerate(roles)
    ]


DROPS = {
    "not_text": ({"chosen": 7}, "chosen is not text (int)"),
    "empty": ({"rejected": "  "}, "rejected is empty"),
    "missing": ({"prompt": None}, "prompt is missing"),
    "no_assistant": ({"chosen": [{"role": "user", "content": "hi"}]}, "chosen has no assistant message"),
    "not_messages": (
        {"rejected": ["just", "strings"]},
        "rejected is a list but not of {role, content} messages",
    ),
}


@pytest.mark.parametrize("changes,reason", DROPS.values(), ids=DROPS.keys())
def test_rows_that_cannot_train_are_dropped_with_a_reason(tmp_path, tokenizer, changes, reason):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(GOOD + [pair(9, **changes)]))
    data = prepare(Preferences(dataset=str(path), eval_fraction=0), tokenizer)
    assert data.dropped == {reason: 1} and data.examples[reason]["row"] == 6 and len(data.train) == 6


CHAT_DROPS = {
    "roles_repeat": (
        conversation("user", "user", "assistant"),
        "chosen: roles do not alternate user/assistant",
    ),
    "ends_with_user": (conversation("user", "assistant", "user"), "does not end with an assistant turn"),
    "assistant_first": (conversation("assistant", "user", "assistant"), "roles do not alternate"),
    "not_a_list": ("plain text", "chosen is not a message list (str); chat format needs one"),
}


@pytest.mark.parametrize("chosen,reason", CHAT_DROPS.values(), ids=CHAT_DROPS.keys())
def test_chat_conversations_must_alternate_and_end_with_the_assistant(tmp_path, tokenizer, chosen, reason):
    rows = [
        {
            "prompt": f"q{i}",
            "chosen": conversation("system", "user", "assistant", answer=f"yes {i}"),
            "rejected": conversation("system", "user", "assistant", answer=f"no {i}"),
        }
        for i in range(4)
    ]
    rows.append({**rows[0], "chosen": chosen})
    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl(rows))
    data = prepare(UltraFeedback(dataset=str(path), format="chat", limit=None, eval_fraction=0), tokenizer)
    assert len(data.train) == 4 and list(data.dropped) == [next(r for r in data.dropped if reason in r)]


def test_max_length_drops_prompts_that_fill_it_and_counts_truncation(tmp_path, tokenizer, caplog):
    rows = GOOD + [pair(7, prompt="word " * 40), pair(8, chosen="long " * 40)]
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl(rows))
    with caplog.at_level("INFO", logger="dpo_hub"):
        data = prepare(Preferences(dataset=str(path), eval_fraction=0), tokenizer, max_length=32)
    reason = "prompt fills dpo.max_length=32 tokens (trl would cut the whole answer)"
    assert data.dropped == {reason: 1} and data.examples[reason]["row"] == 6
    assert data.truncated == 1 and len(data.train) == 7
    assert (
        "dpo.max_length=32: 1 of 8 pair(s) longer are cut to their first 32 tokens and 1 dropped"
        in caplog.text
    )
    assert "keep_start" in caplog.text
    assert prepare(Preferences(dataset=str(path), eval_fraction=0), tokenizer, max_length=512).truncated == 0


def test_max_length_that_no_prompt_fits_stops_the_run(tmp_path, tokenizer):
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl([pair(i, prompt=f"{i} " + "word " * 40) for i in range(3)]))
    with pytest.raises(DataError, match=r"all 3 rows dropped: 3 prompt fills dpo.max_length=16 tokens"):
        prepare(Preferences(dataset=str(path), eval_fraction=0), tokenizer, max_length=16)


def test_preferences_reads_every_row_by_default(tmp_path, tokenizer):
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([pair(i) for i in range(2100)]))
    assert len(prepare(Preferences(dataset=str(path), eval_fraction=0), tokenizer).train) == 2100


# ---- preflight ---------------------------------------------------------------------------------------------
EMBEDDED = RECIPE.override({"model": "embedded"})


def bad_loss(recipe: Recipe) -> Recipe:
    dpo = dataclasses.replace(recipe.dpo)
    object.__setattr__(dpo, "loss_type", "not_a_loss")  # as if built against another trl
    return recipe.replace(dpo=dpo)


PREFLIGHT = {
    "target_missing": (
        lambda t: EMBEDDED.override({"lora.target_modules": "q_proj,c_attn"}),
        ["lora.target_modules: q_proj not in model 'embedded'", "c_attn", "c_fc", "all-linear"],
    ),
    "max_length_above_positions": (
        lambda t: EMBEDDED.override({"dpo.max_length": "2048"}),
        ["dpo.max_length=2048", "1024 positions", "--dpo.max_length 1024"],
    ),
    "resume_missing": (
        lambda t: EMBEDDED.override({"resume": str(t / "gone")}),
        ["resume=", "gone", "no such checkpoint folder", "auto, never"],
    ),
    "output_is_file": (
        lambda t: EMBEDDED.override({"output_dir": str(t / "file")}),
        ["output_dir=", "is a file"],
    ),
    "output_under_file": (
        lambda t: EMBEDDED.override({"output_dir": str(t / "file" / "o")}),
        ["output_dir=", "not a writable folder"],
    ),
    "loss_not_in_trl": (lambda t: bad_loss(EMBEDDED), ["dpo.loss_type='not_a_loss'", "sigmoid"]),
}


@pytest.mark.parametrize("make,words", PREFLIGHT.values(), ids=PREFLIGHT.keys())
def test_preflight_refuses_before_anything_loads(tmp_path, make, words):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecipeError) as err:
        preflight.check_recipe(make(tmp_path))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "preflight must create nothing"


@pytest.mark.skipif(not wants_cpu(), reason="fp16 is refused only when the run is on the CPU")
def test_preflight_refuses_fp16_on_cpu_and_notes_bf16():
    with pytest.raises(RecipeError, match="dpo.precision=fp16 needs a GPU.*use fp32"):
        preflight.check_recipe(EMBEDDED.override({"dpo.precision": "fp16"}))
    assert any(
        "bf16 on the CPU" in n for n in preflight.check_recipe(EMBEDDED.override({"dpo.precision": "bf16"}))
    )


def test_preflight_model_without_config_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailableError, match="its config could not be read.*--model embedded"):
        preflight.check_recipe(EMBEDDED.override({"model": str(tmp_path)}))


def test_preflight_passes_a_good_recipe_and_a_saved_model(tmp_path):
    assert preflight.check_recipe(EMBEDDED) == []
    preflight.model_config("embedded").save_pretrained(tmp_path)  # a local folder: config only, no weights
    assert (
        preflight.check_recipe(
            EMBEDDED.override({"model": str(tmp_path), "lora.target_modules": "attn.c_attn"})
        )
        == []
    )


# ---- the real command: exit 2, one error line, quickly, nothing created ------------------------------------
CLI = {
    "beta_zero": (["--dpo.beta", "0"], "dpo.beta=0.0 must be > 0"),
    "beta_nan": (["--dpo.beta", "nan"], "dpo.beta=nan must be a finite number"),
    "max_length_tiny": (["--dpo.max_length", "8"], "dpo.max_length=8 must be >= 16"),
    "temperature_zero": (["--generation.temperature", "0"], "generation.temperature=0.0 must be > 0"),
    "yaml_group_not_mapping": (["--config", "CONFIG"], "dpo must be a mapping"),
}


@pytest.mark.parametrize("argv,expected", CLI.values(), ids=CLI.keys())
def test_command_line_fails_fast_with_one_error_line(tmp_path, argv, expected):
    (tmp_path / "bad.yaml").write_text("dpo: 3\n")
    argv = [str(tmp_path / "bad.yaml") if a == "CONFIG" else a for a in argv]
    started = time.time()
    proc = run(
        [sys.executable, "-m", RECIPE_MODULE, *argv, "--output_dir", str(tmp_path / "o")],
        offline_env(tmp_path),
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "[dpo_hub]" not in proc.stdout
    assert time.time() - started < 60
    assert not any((tmp_path / n).exists() for n in ("o", ".o.incomplete", "o.checkpoints"))
