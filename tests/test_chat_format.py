"""Prompt formats end to end (chat template, text separator) and the ``model`` group, offline and fast.

The embedded tokenizer is GPT-2's; a ChatML-like template whose end of turn is GPT-2's eos makes it a
chat tokenizer, so the doubled end-of-turn bug can show.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from dpo_hub import (
    HHRLHF,
    Generation,
    ModelSpec,
    Preferences,
    Recipe,
    RecipeError,
    UltraFeedback,
    embedded,
    prepare,
)
from dpo_hub.compare.base_vs_tuned import compare_model, load_pairs, side_by_side
from dpo_hub.compare.report import format_table
from dpo_hub.compare.scoring import encode_pair
from dpo_hub.hub.runs import pairs_file
from dpo_hub.sources.standins import bigbench_pairs
from dpo_hub.training.preflight import check_recipe

EOT = "<|endoftext|>"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}" + EOT + "\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROWS = [
    {"question": f"Question {i}?", "true": f"True answer {i}.", "false": f"False answer {i}."}
    for i in range(12)
]


@pytest.fixture(scope="module")
def chat_tokenizer() -> Any:
    tokenizer = embedded.load_tokenizer()
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def mapped(path, **extra) -> Preferences:
    return Preferences(
        dataset=str(path),
        prompt_column="question",
        chosen_column="true",
        rejected_column="false",
        eval_fraction=0,
        **extra,
    )


def test_preferences_plain_prompts_in_the_chat_template_with_one_end_of_turn(pairs_path, chat_tokenizer):
    data = prepare(mapped(pairs_path, format="chat"), chat_tokenizer)
    pair = next(p for p in data.train if "Question 3?" in p["prompt"])
    assert pair["prompt"] == "<|im_start|>user\nQuestion 3?" + EOT + "\n<|im_start|>assistant\n"
    assert pair["chosen"] == "True answer 3." and pair["rejected"] == "False answer 3."  # trl appends the eos
    ids, start = encode_pair(chat_tokenizer, pair)[0]  # scored as trained: exactly one end of turn
    assert chat_tokenizer.decode(ids[start:]) == "True answer 3." + EOT


def test_ultrafeedback_and_hh_chat_do_not_double_the_end_of_turn(chat_tokenizer):
    turns = [{"role": "user", "content": "Hi?"}]
    row = {
        "prompt": "Hi?",
        "chosen": [*turns, {"role": "assistant", "content": "Hello."}],
        "rejected": [*turns, {"role": "assistant", "content": "Go."}],
    }
    uf = UltraFeedback(format="chat").to_pair(row, chat_tokenizer)
    hh = HHRLHF(format="chat").to_pair(
        {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go."},
        chat_tokenizer,
    )
    assert (
        uf
        == hh
        == {
            "prompt": "<|im_start|>user\nHi?" + EOT + "\n<|im_start|>assistant\n",
            "chosen": "Hello.",
            "rejected": "Go.",
        }
    )
    for pair in (
        uf,
        Preferences(format="chat").to_pair(row, chat_tokenizer),
    ):  # message lists in Preferences too
        assert [chat_tokenizer.decode(ids).count(EOT) for ids, _ in encode_pair(chat_tokenizer, pair)] == [
            2,
            2,
        ]


def test_text_format_separator_is_recorded_and_used_by_training_scoring_and_generation(
    pairs_path, chat_tokenizer
):
    adapter = mapped(pairs_path, separator="\nA: ")
    pair = prepare(adapter, chat_tokenizer).train[0]
    assert pair["prompt"].endswith("?\nA: ")
    assert adapter.prompt_text("Why?", chat_tokenizer) == "Why?\nA: "
    recipe = Recipe(data=adapter)
    assert (
        Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    )  # recorded in recipe.yaml as written
    assert 'separator: "\\nA: "' in recipe.to_yaml()
    assert recipe.fingerprint() != Recipe(data=mapped(pairs_path)).fingerprint()
    assert (
        Preferences().separator == "\n"
        and UltraFeedback().to_pair({"prompt": "Q?", "chosen": "a", "rejected": "b"}, chat_tokenizer)[
            "prompt"
        ]
        == "Q?\n"
    )


def test_generation_prompts_are_formatted_as_training_formatted_them(chat_tokenizer):
    seen = []
    model = embedded.build_model()
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    original = chat_tokenizer.__call__
    chat = Preferences(format="chat")

    class Spy:
        def __getattr__(self, name):
            return getattr(chat_tokenizer, name)

        def __call__(self, text, **kw):
            seen.append(text)
            return original(text, **kw)

    rows = side_by_side(
        model,
        Spy(),
        Generation(prompts=("Why, though?\n",), max_new_tokens=2),
        lambda p: chat.prompt_text(p, chat_tokenizer),
    )
    assert (
        seen == [chat.prompt_text("Why, though?\n", chat_tokenizer)] * 2
        and rows[0]["prompt"] == "Why, though?\n"
    )


def test_a_command_line_prompt_with_a_comma_and_newline_is_one_prompt():
    recipe = Recipe().override({"generation.prompts": "Hello, world?\n"}, source="command line")
    assert recipe.generation.prompts == ("Hello, world?\n",)
    assert Recipe().override({"generation.prompts": "[a, b]"}).generation.prompts == ("a", "b")
    assert Recipe().override({"lora.target_modules": "c_attn, c_proj"}).lora.target_modules == (
        "c_attn",
        "c_proj",
    )


def test_compare_pairs_file_maps_columns_formats_like_training_and_counts_skipped(pairs_path, chat_tokenizer):
    recipe = Recipe(data=Preferences(format="chat"))
    pairs = load_pairs(
        pairs_file(
            str(pairs_path),
            recipe,
            {"prompt_column": "question", "chosen_column": "true", "rejected_column": "false"},
        ),
        chat_tokenizer,
    )
    assert len(pairs) == 12 and pairs[0]["prompt"].startswith("<|im_start|>user\nQuestion 0?")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        embedded.build_model(),
        LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False),
    )
    long = {**pairs[1], "prompt": "word " * 40}
    comparison = compare_model(model, chat_tokenizer, [pairs[0], long, pairs[2]], prompts=[], max_length=32)
    assert comparison.preference["n_pairs"] == 2 and comparison.preference["skipped"] == 1
    assert "1 skipped (prompt alone fills max_length 32" in format_table(comparison)


def test_bigbench_task_becomes_every_false_answer_against_the_true_one():
    task = {"examples": [{"input": "Q?", "target_scores": {"yes": 1, "no": 0, "maybe": 0}}]}
    assert bigbench_pairs(task) == [
        {"prompt": "Q?", "chosen": "yes", "rejected": r, "question": "Q?"} for r in ("no", "maybe")
    ]


# ---- the model group -----------------------------------------------------------------------------
def test_model_is_a_group_and_a_plain_name_still_works():
    plain = Recipe(model="gpt2")
    assert plain.model == "gpt2" and plain.model == ModelSpec(name="gpt2")
    assert Recipe().override({"model": "gpt2"}) == plain == Recipe.from_dict({"model": {"name": "gpt2"}})
    tuned = plain.override(
        {"model.dtype": "bfloat16", "model.attn_implementation": "eager"}, source="command line"
    )
    assert tuned.model.load_kwargs() == {"dtype": torch.bfloat16, "attn_implementation": "eager"}
    assert "dtype: bfloat16" in tuned.to_yaml() and tuned.fingerprint() != plain.fingerprint()
    # a plain name's fingerprint is computed from the name alone (not the group's other, unset keys), so
    # adding a key to the model group leaves it as it was: the literal is pinned in test_recipe.py
    values = plain.to_dict()
    assert values["model"]["name"] == "gpt2" and plain.fingerprint() == "9a0d3eba6fb1"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("model.dtype", "bfloat17", ["model.dtype='bfloat17'", "bfloat16", "float32"]),
        ("model.attn_implementation", "fast", ["model.attn_implementation='fast'", "eager", "sdpa"]),
        ("model.quantization", "3bit", ["4bit", "8bit"]),
        ("model.gguf_file", "model.bin", [".gguf"]),
        ("model.dtyp", "x", ["did you mean model.dtype"]),
    ],
)
def test_bad_model_settings_are_refused_by_name(key, value, words):
    with pytest.raises(RecipeError) as err:
        Recipe().override({key: value}, source="command line")
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("launcher", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_quantization_with_sharding_on_the_cpu_is_refused_before_any_weights_load(monkeypatch, launcher):
    """QLoRA runs on the CPU (tests/test_qlora_cpu.py); with FSDP or DeepSpeed there it does not."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv(launcher, "true")
    recipe = Recipe(model=ModelSpec(name="a/model-that-does-not-exist", quantization="4bit"))
    with pytest.raises(RecipeError, match=r"quantization=4bit with FSDP/DeepSpeed does not run on the CPU"):
        check_recipe(recipe)


def test_a_gguf_path_is_its_folder_and_file():
    assert ModelSpec(name="/m/x.Q4.gguf").location() == ("/m", "x.Q4.gguf")
    assert ModelSpec(name="org/repo", gguf_file="f.gguf").location() == ("org/repo", "f.gguf")


def test_a_stand_in_folder_is_carded_as_the_hub_model_it_stands_for(tmp_path):
    from dpo_hub.hub.card import base_model_id
    from dpo_hub.sources.standins import STAND_IN_FILE

    (tmp_path / STAND_IN_FILE).write_text(
        json.dumps({"hub_id": "org/real", "what": "a Q4_1 GGUF, de-quantised"})
    )
    assert base_model_id({"name": str(tmp_path)}) == base_model_id(str(tmp_path)) == "org/real"
    assert (
        base_model_id("gpt2") == "gpt2" and base_model_id({"name": "embedded"}) == embedded.EMBEDDED_MODEL_ID
    )
