"""dpo-hub export: a run as GGUF written by llama.cpp's own converter, loaded back and checked, pushed with
its card; and the errors that leave nothing half-written.

The converter comes from the llama-cpp-python sdist on PyPI (pip download, once per test session).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RECIPE_MODULE, offline_env, run
from huggingface_hub import HfApi, ModelCard

from dpo_hub import ExportError, OutputExistsError, export_gguf, merge_adapter
from dpo_hub.export import converter
from dpo_hub.export.llama_cpp import runtime_dir
from dpo_hub.export.modelfile import ChatTurns, modelfile
from dpo_hub.export.verify import verify_gguf
from dpo_hub.testing.hub import LocalHub

PROMPTS = ["Is eating animals cruel?", "The capital of France is"]
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short run of the shipped recipe on the embedded default (2 steps at a high learning rate, so the
    adapter moves the model); seconds, where conftest's ``trained_run`` takes minutes."""
    tmp = tmp_path_factory.mktemp("short-run")
    options = ["--data.limit", "24", "--data.eval_fraction", "0.25", "--dpo.max_steps", "2"]
    options += ["--dpo.max_length", "64", "--dpo.learning_rate", "0.02", "--generation.max_new_tokens", "4"]
    proc = run(
        [sys.executable, "-m", RECIPE_MODULE, "--output_dir", str(tmp / "run"), *options], offline_env(tmp)
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return tmp / "run", proc


@pytest.fixture(scope="module")
def pushed(trained_run, tmp_path_factory):
    """``dpo-hub export RUN --gguf f16 --output DIR --push REPO`` against the local Hub: the folder, the
    process and the pushed repo's files and card."""
    tmp = tmp_path_factory.mktemp("export")
    output = tmp / "gguf"
    with LocalHub(tmp / "hub") as hub:
        env = hub.client_env(hf_home=tmp / "hf_home")
        command = [sys.executable, "-m", "dpo_hub", "export", str(trained_run[0]), "--gguf", "f16"]
        proc = run([*command, "--output", str(output), "--push", "tester/dpo-gguf"], env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        api = HfApi(endpoint=hub.url, token=env["HF_TOKEN"])
        files = set(api.list_repo_files("tester/dpo-gguf"))
        card = ModelCard.load(api.hf_hub_download("tester/dpo-gguf", "README.md", cache_dir=tmp / "dl"))
        remote = Path(api.hf_hub_download("tester/dpo-gguf", "model-f16.gguf", cache_dir=tmp / "dl"))
        same = remote.read_bytes() == (output / "model-f16.gguf").read_bytes()
        secret_seen = env["HF_TOKEN"] in proc.stdout + proc.stderr
    return output, proc, files, card, same, secret_seen


def test_f16_export_loads_back_with_the_merged_models_log_probs(pushed, trained_run, tmp_path):
    output, proc, *_ = pushed
    assert {p.name for p in output.iterdir()} == {
        "model-f16.gguf",
        "adapter-f16.gguf",
        "Modelfile",
        "README.md",
        "export.json",
    }
    assert not list(output.parent.glob(".*")), "no staging folder is left behind"
    check = json.loads((output / "export.json").read_text())["verification"]
    assert "verified: GGUF f16 vs merged model" in proc.stdout and check["max_abs_logprob_diff"] <= 0.05
    # independently of the export's own check: a fresh merge and the GGUF, full next-token distributions
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = merge_adapter(trained_run[0], tmp_path / "merged")
    want = AutoModelForCausalLM.from_pretrained(merged).eval()
    got = AutoModelForCausalLM.from_pretrained(output, gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = want(**ids).logits.log_softmax(-1), got(**ids).logits.log_softmax(-1)
    mask = ids.attention_mask.bool()
    assert (a - b)[mask].abs().max() < 0.02, (a - b)[mask].abs().max()
    assert (a.argmax(-1) == b.argmax(-1))[mask].all()


def test_pushed_repo_has_the_files_and_a_card_that_says_how_to_run_it(pushed):
    output, proc, files, card, same, secret_seen = pushed
    assert {"model-f16.gguf", "adapter-f16.gguf", "Modelfile", "README.md", "export.json"} <= files
    assert same, "the pushed GGUF is the exported file byte for byte"
    assert "/tester/dpo-gguf/commit/" in proc.stdout and not secret_seen
    assert card.data.base_model == "dpo-hub/tiny-gpt2-embedded" and card.data.library_name == "gguf"
    text = card.text
    for needle in (
        "**f16** GGUF",
        "llama-cli -m model-f16.gguf",
        "--lora adapter-f16.gguf",
        "ollama create dpo-gguf -f Modelfile",
        "top-1 next token agrees",
        "preference accuracy (summed log-prob)",  # the run's comparison table
        "8.7 MB",  # the GGUF's size (a GPT-2 of 3.4M parameters in f16, vocabulary included)
    ):
        assert needle in text, needle


def test_modelfile_names_the_gguf_and_the_stop_tokens(pushed):
    text = (pushed[0] / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in text and 'PARAMETER stop "<|endoftext|>"' in text
    assert 'PARAMETER stop "User:"' in text and text.count("TEMPLATE") == 1


def test_chat_template_turns_render_what_the_tokenizer_renders(tokenizer):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = CHATML
    turns = ChatTurns.from_tokenizer(tokenizer)
    conversation = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Is eating animals cruel?"},
    ]
    expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert turns.render(conversation) == expected
    assert turns.default_system == "You are a helpful assistant"
    text = modelfile("m.gguf", tokenizer)
    assert 'PARAMETER stop "<|im_end|>"' in text and 'SYSTEM """You are a helpful assistant"""' in text
    assert '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in text.replace(
        "else if", "if"
    )


def test_a_gguf_that_computes_something_else_fails_the_check(trained_run, tmp_path):
    merged = merge_adapter(trained_run[0], tmp_path / "merged")
    inputs = converter.converter_input(merged, tmp_path / "in")
    q8 = converter.convert_model(inputs, tmp_path / "m-q8_0.gguf", "q8_0")
    assert verify_gguf(q8, merged, "q8_0").max_abs_logprob_diff > 1e-3  # q8_0 is not exact ...
    with pytest.raises(ExportError, match="failed its check.*tolerance 0.001"):
        verify_gguf(q8, merged, "f32")  # ... so it fails f32's tolerance


def test_failed_export_keeps_the_previous_one_and_leaves_nothing(pushed, tmp_path):
    output = tmp_path / "gguf"
    shutil.copytree(pushed[0], output)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    run_dir = _adapter_on(tmp_path, "OPTForCausalLM")
    with pytest.raises(ExportError, match="architecture OPTForCausalLM is not supported by llama.cpp"):
        export_gguf(run_dir, output, "f16", overwrite=True)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gguf", "opt", "opt-adapter"]
    with pytest.raises(OutputExistsError, match="already holds a finished GGUF export"):
        export_gguf(run_dir, output, "f16")


def test_quantised_base_and_unknown_type_are_refused_before_anything_is_written(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run[0], copy)
    recipe = (copy / "recipe.yaml").read_text()
    (copy / "recipe.yaml").write_text(recipe.replace("quantization: null", "quantization: 4bit"))
    with pytest.raises(ExportError, match="trained on a 4bit base.*set model.quantization to null"):
        export_gguf(copy, tmp_path / "out", "f16")
    with pytest.raises(ExportError, match="'q4_k' is not a type.*f32, f16, bf16, q8_0"):
        export_gguf(copy, tmp_path / "out", "q4_k")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_disk_full_is_one_clear_error_and_leaves_nothing(trained_run, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with pytest.raises(ExportError, match="disk holding .* is full.*nothing else changed"):
            export_gguf(trained_run[0], small / "gguf", "f16")
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_running_in_llama_cpp_without_a_compiler_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, c++ or cmake
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ExportError, match="cc, c\\+\\+, cmake is not on PATH; install a C/C\\+\\+ compiler"):
        runtime_dir()


def _adapter_on(tmp_path: Path, architecture: str) -> Path:
    """A LoRA adapter folder on a tiny random model of ``architecture`` (saved next to it)."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from dpo_hub import embedded

    assert architecture == "OPTForCausalLM"
    config = transformers.OPTConfig(
        vocab_size=50272, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
        word_embed_proj_dim=16, max_position_embeddings=64,
    )  # fmt: skip
    base = tmp_path / "opt"
    transformers.OPTForCausalLM(config).save_pretrained(base)
    embedded.load_tokenizer().save_pretrained(base)
    model = get_peft_model(
        transformers.AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(tmp_path / "opt-adapter")
    return tmp_path / "opt-adapter"
