"""The exported GGUF in llama.cpp itself: greedy tokens equal transformers' for f16, the base GGUF + GGUF
LoRA equal the merged model, and the top-1 agreement of q8_0 is stated.

Not in CI: it compiles llama-cpp-python from the pinned sdist once (about 14 minutes on 2 busy cores) into
$DPO_HUB_CACHE or ~/.cache/dpo_hub; ``smollm2`` also trains the SmolLM2 recipe briefly (pip stand-ins; on
the embedded preference sample when TruthfulQA's bigbench sdist cannot be had).
Run it with ``pytest -m llama_cpp -n 0 -s tests/test_llama_cpp.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import USER_DPO_HUB_CACHE, accelerate_cmd, offline_env, run

from dpo_hub import embedded, export_gguf, merge_adapter
from dpo_hub.export import converter
from dpo_hub.export.llama_cpp import build_seconds, greedy_tokens

pytestmark = pytest.mark.llama_cpp
PROMPTS = ["Is eating animals cruel?", "The capital of France is", "Write a short poem about the sea."]
NEW_TOKENS = 16


@pytest.fixture(autouse=True)
def user_cache(monkeypatch):
    """The llama.cpp build and the stand-ins once per machine, not per test session."""
    monkeypatch.setenv("DPO_HUB_CACHE", USER_DPO_HUB_CACHE)


def transformers_greedy(folder: Path, prompts: list[str], chat: bool = False) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            new = model.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0)[
                0, ids.shape[1] :
            ]
        out.append([int(t) for t in new if t != tokenizer.eos_token_id])
    return out


def random_lora_run(tmp_path: Path) -> Path:
    """A GPT-2 LoRA whose B is not zero (peft's init_lora_weights=False) on the embedded base saved beside
    it: a visible change, so base + LoRA in llama.cpp is tested against something other than the base."""
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    embedded.build_model().save_pretrained(base)
    embedded.load_tokenizer().save_pretrained(base)
    from transformers import AutoModelForCausalLM

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
        init_lora_weights=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(tmp_path / "adapter")
    embedded.load_tokenizer().save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for p, q in zip(a, b) for x, y in zip(p, q)]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


def first_divergence(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_embedded_gguf_runs_in_llama_cpp_like_transformers(tmp_path):
    adapter = random_lora_run(tmp_path)
    f16 = export_gguf(adapter, tmp_path / "f16", "f16")
    merged = merge_adapter(adapter, tmp_path / "merged")
    want = transformers_greedy(merged, PROMPTS)
    got = greedy_tokens(f16 / "model-f16.gguf", PROMPTS, NEW_TOKENS)
    print(f"\nllama-cpp-python build: {build_seconds():.0f} s")
    assert [g["ids"] for g in got] == want, (got, want)
    base_gguf = converter.convert_model(
        converter.converter_input(tmp_path / "base", tmp_path / "base-in"), tmp_path / "base-f16.gguf", "f16"
    )
    plain = greedy_tokens(base_gguf, PROMPTS, NEW_TOKENS)
    with_lora = greedy_tokens(base_gguf, PROMPTS, NEW_TOKENS, lora=f16 / "adapter-f16.gguf")
    assert [g["ids"] for g in with_lora] == want, "base GGUF + GGUF LoRA = the merged model"
    assert [g["ids"] for g in plain] != want, "the LoRA changes the answers (else the check above is empty)"
    q8 = export_gguf(adapter, tmp_path / "q8", "q8_0")
    got_q8 = greedy_tokens(q8 / "model-q8_0.gguf", PROMPTS, NEW_TOKENS)
    share = agreement([g["ids"] for g in got_q8], want)
    print(f"embedded q8_0: greedy tokens equal transformers' f32 for {share:.1%}")
    assert share >= 0.5


@pytest.mark.real_model
def test_smollm2_recipe_output_runs_in_llama_cpp(tmp_path):
    env = offline_env(tmp_path, DPO_HUB_CACHE=USER_DPO_HUB_CACHE)
    env.pop("HF_HUB_OFFLINE")
    out = tmp_path / "run"
    command = [*accelerate_cmd(), "-m", "dpo_hub.recipes.smollm2_truthfulqa", "--output_dir", str(out)]
    options = ["--data.limit", "48", "--dpo.max_steps", "4", "--generation.max_new_tokens", "8"]
    if not (Path(USER_DPO_HUB_CACHE) / "truthfulqa-bigbench" / "pairs.jsonl").is_file():  # no bigbench sdist
        options += ["--data.dataset", str(embedded.SAMPLE_PATH), "--data.split_by", "prompt"]
    proc = run([*command, *options], env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.environ["HF_HUB_OFFLINE"] = "1"
    f16 = export_gguf(out, tmp_path / "f16", "f16")
    check = json.loads((f16 / "export.json").read_text())["verification"]
    print(f"\nSmolLM2 f16 verification: {check}")
    merged = merge_adapter(out, tmp_path / "merged")
    want = transformers_greedy(merged, PROMPTS)
    got = [g["ids"] for g in greedy_tokens(f16 / "model-f16.gguf", PROMPTS, NEW_TOKENS)]
    for a, b in zip(got, want):
        print("first divergence at", first_divergence(a, b), "of", len(b))
    assert got == want, (got, want)
    q8 = export_gguf(out, tmp_path / "q8", "q8_0")
    share = agreement([g["ids"] for g in greedy_tokens(q8 / "model-q8_0.gguf", PROMPTS, NEW_TOKENS)], want)
    print(f"SmolLM2 q8_0 greedy agreement with transformers f32: {share:.1%}")
