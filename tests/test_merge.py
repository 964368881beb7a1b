"""dpo-hub merge: the trained adapter merged into its base is a standalone model with the same logits."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from conftest import offline_env, run
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open

from dpo_hub import MergeError, OutputError, OutputExistsError, merge_adapter, open_run
from dpo_hub.testing.hub import LocalHub

PROMPTS = ["Is eating animals cruel?", "How do I bake bread? Tell me step by step."]
PLAIN_LOAD = """
import sys
sys.modules["peft"] = None  # any import of peft now fails: the merged folder must load without it
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(**tokenizer(PROMPTS, return_tensors="pt", padding=True)).logits
torch.save(logits, sys.argv[2])
print("LOADED", type(model).__name__, model.dtype, model.generation_config.max_new_tokens)
"""


@pytest.fixture(scope="module")
def merged(trained_run, tmp_path_factory):
    return merge_adapter(trained_run[0], tmp_path_factory.mktemp("merge") / "merged")


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(PROMPTS, return_tensors="pt", padding=True)).logits


def test_merged_model_equals_base_plus_adapter_and_loads_without_peft(trained_run, merged, tmp_path):
    saved = tmp_path / "logits.pt"
    code = f"PROMPTS = {PROMPTS!r}\n" + textwrap.dedent(PLAIN_LOAD)
    proc = run([sys.executable, "-c", code, str(merged), str(saved)], offline_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "LOADED GPT2LMHeadModel torch.float32 50" in proc.stdout
    run_ = open_run(trained_run[0])
    assert run_.model.peft_config["default"].fan_in_fan_out, "GPT-2's Conv1D layers: the transposed merge"
    tuned = logits(run_.model, run_.tokenizer)
    with run_.model.disable_adapter():
        base = logits(run_.model, run_.tokenizer)
    plain = torch.load(saved)
    assert torch.allclose(plain, tuned, atol=1e-4), (plain - tuned).abs().max()
    assert (plain - base).abs().max() > 1e-3, "the merged model must carry the adapter, not be the base"
    files = {p.name for p in merged.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "merge.json",
    } <= files
    assert not any(name.startswith("adapter_") or name.endswith((".bin", ".pt")) for name in files)
    assert not list(merged.parent.glob(".*.incomplete")), "no staging folder is left behind"
    assert len({p.stat().st_mode & 0o777 for p in merged.iterdir()}) == 1, (
        "the weights as readable as the rest"
    )
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["do_sample"] and generation["top_p"] == 0.95 and generation["pad_token_id"] is not None


def test_card_says_merge_of_the_base_and_names_the_adapter(merged, trained_run):
    card = ModelCard.load(merged / "README.md")
    assert card.data.base_model == "dpo-hub/tiny-gpt2-embedded" and card.data.base_model_relation == "merge"
    assert card.data.library_name == "transformers" and "merge" in card.data.tags
    assert "the adapter of the run folder `run`" in card.text and "fingerprint `" in card.text
    info = json.loads((merged / "merge.json").read_text())
    assert info["adapter_source"] == str(trained_run[0].resolve()), "merge.json names the adapter in full"
    assert str(trained_run[0].resolve()) not in card.text, "the card names the run folder only"
    assert (
        info["adapter"] == "run"
        and info["base_model"] == "dpo-hub/tiny-gpt2-embedded"
        and info["dtype"] == "float32"
    )


def test_existing_output_is_kept_unless_overwrite_and_dtype_is_written(trained_run, merged, tmp_path):
    before = (merged / "model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="already holds a finished merge.*--overwrite"):
        merge_adapter(trained_run[0], merged)
    assert (merged / "model.safetensors").read_bytes() == before
    with pytest.raises(
        MergeError, match="dtype 'int8' cannot be written; use one of float32, bfloat16, float16"
    ):
        merge_adapter(trained_run[0], tmp_path / "x", dtype="int8")
    with pytest.raises(OutputError, match="would replace the run folder"):
        merge_adapter(trained_run[0], trained_run[0], overwrite=True)
    half = merge_adapter(trained_run[0], tmp_path / "half", dtype="bfloat16")
    with safe_open(half / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    assert json.loads((half / "merge.json").read_text())["dtype"] == "bfloat16"


def test_cli_merges_and_pushes_to_the_hub(trained_run, tmp_path, tmp_path_factory):
    output = tmp_path / "pushed"
    with LocalHub(tmp_path_factory.mktemp("merge-hub")) as hub:
        env = hub.client_env(hf_home=tmp_path / "hf_home")
        proc = run(
            [
                sys.executable,
                "-m",
                "dpo_hub",
                "merge",
                str(trained_run[0]),
                "--output",
                str(output),
                "--push",
                "tester/merged-dpo",
            ],
            env,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert f"wrote {output}" in proc.stdout and "/tester/merged-dpo/commit/" in proc.stdout
        assert env["HF_TOKEN"] not in proc.stdout + proc.stderr
        api = HfApi(endpoint=hub.url, token=env["HF_TOKEN"])
        files = set(api.list_repo_files("tester/merged-dpo"))
        assert {
            "model.safetensors",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "README.md",
            "merge.json",
        } <= files
        card = ModelCard.load(
            api.hf_hub_download("tester/merged-dpo", "README.md", cache_dir=tmp_path / "dl")
        )
        remote = api.hf_hub_download("tester/merged-dpo", "model.safetensors", cache_dir=tmp_path / "dl")
        assert open(remote, "rb").read() == (output / "model.safetensors").read_bytes()
    assert card.data.base_model_relation == "merge" and card.data.model_name == "tester/merged-dpo"
    assert 'AutoModelForCausalLM.from_pretrained("tester/merged-dpo")' in card.text
