"""The speed settings change how fast a run is, never what it computes.

Each lever is checked against the slow path it replaces: the cached reference against trl's per-step
reference, completion-only log-probs against full logits, the timed warm-up against a run without it.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import set_seed

from dpo_hub import embedded, prepare
from dpo_hub.plan import make_plan
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.speedups import fuse_activations, resolve_precision, want_checkpointing
from dpo_hub.standins import cache_dir
from dpo_hub.training import build_trainer

SMALL = {"model": "embedded", "data.dataset": "embedded", "data.limit": 24, "data.eval_fraction": 0.25,
         "dpo.max_steps": 2, "dpo.logging_steps": 1, "dpo.max_length": 64, "dpo.per_device_eval_batch_size": 4}


@pytest.fixture(scope="module")
def tokenizer():
    return embedded.load_tokenizer()


def trainer_for(tmp_path, tokenizer, **changes):
    recipe = RECIPE.override({**SMALL, **changes})
    return build_trainer(recipe, tokenizer, prepare(recipe.data, tokenizer, max_length=64), tmp_path / "ckpt")


def first_batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(2)])


def cache_files():
    return sorted((cache_dir() / "reference_logps").glob("*.json"))


def test_cached_reference_gives_trls_loss_and_is_reused(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    slow = trainer_for(tmp_path / "a", tokenizer, **{"dpo.reference_cache": False})
    fast = trainer_for(tmp_path / "b", tokenizer)
    assert not slow.precompute_ref_logps and fast.precompute_ref_logps
    assert len(cache_files()) == 2  # train and eval
    batch = first_batch(fast)
    assert "ref_chosen_logps" in batch
    slow.model.eval(), fast.model.eval()
    with torch.no_grad():  # the reference trl computes in the step vs the one read from the cache
        expected = slow.compute_loss(slow.model, {k: v for k, v in batch.items() if not k.startswith("ref_")})
        got = fast.compute_loss(fast.model, batch)
    assert float(got) == pytest.approx(float(expected), abs=1e-6)
    ref = slow.compute_ref_log_probs(slow.model, {k: v for k, v in batch.items() if not k.startswith("ref_")})
    assert torch.allclose(ref[0], batch["ref_chosen_logps"], atol=1e-4)
    assert torch.allclose(ref[1], batch["ref_rejected_logps"], atol=1e-4)

    before = {p: p.stat().st_mtime_ns for p in cache_files()}
    other_lora = trainer_for(tmp_path / "c", tokenizer, **{"lora.r": 8, "dpo.beta": 0.3})  # same base and data
    assert {p: p.stat().st_mtime_ns for p in cache_files()} == before, "a sweep point must reuse the pass"
    assert other_lora.train_dataset["ref_chosen_logps"] == fast.train_dataset["ref_chosen_logps"]
    trainer_for(tmp_path / "d", tokenizer, **{"dpo.max_length": 48})  # other tokenisation: its own entry
    assert len(cache_files()) == 4


def test_completion_only_log_probs_equal_full_logits(tmp_path, tokenizer):
    trainer = trainer_for(tmp_path, tokenizer)  # installs completion-only scoring on the CPU
    batch = first_batch(trainer)
    model = trainer.model.eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        fused = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                      fused_lm_head=True).log_probs
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    full = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None].clamp(min=0))[..., 0]
    scored = labels[:, 1:] != -100
    assert scored.any() and (~scored).any()  # prompts are masked, answers scored
    assert torch.allclose(fused[scored], full[scored], atol=1e-5)
    assert (fused[~scored] == 0).all()


def test_base_dropout_off_lora_dropout_kept(tmp_path, tokenizer):
    def dropouts(trainer):
        found = {"base": set(), "lora": set()}
        for name, module in trainer.model.named_modules():
            if isinstance(module, torch.nn.Dropout):
                found["lora" if "lora_" in name else "base"].add(module.p)
        return found

    default = dropouts(trainer_for(tmp_path / "a", tokenizer))
    assert default == {"base": {0.0}, "lora": {0.1}}
    kept = dropouts(trainer_for(tmp_path / "b", tokenizer, **{"dpo.base_model_dropout": True}))
    assert kept == {"base": {0.1}, "lora": {0.1}}  # GPT-2's config: 0.1


def test_warm_up_leaves_training_unchanged_and_plan_counts_the_tokens(tmp_path, tokenizer):
    epoch = {"dpo.max_steps": -1, "dpo.num_train_epochs": 1.0}
    timed, plain = trainer_for(tmp_path / "a", tokenizer, **epoch), trainer_for(tmp_path / "b", tokenizer, **epoch)
    rng = torch.random.get_rng_state()
    plan = make_plan(timed)
    assert torch.equal(torch.random.get_rng_state(), rng), "the warm-up must not move the random stream"
    assert plan.steps == len(timed.train_dataset) and plan.seconds_per_token > 0 and plan.estimated_s > 0
    for trainer in (timed, plain):  # from the same random state, as two separate runs start
        set_seed(42)
        trainer.train()
    for (name, a), (_, b) in zip(timed.model.named_parameters(), plain.model.named_parameters()):
        assert torch.equal(a, b), f"the warm-up changed {name}"
    assert timed.state.global_step == plan.steps
    assert max(e.get("num_tokens", 0) for e in timed.state.log_history) == plan.tokens  # trl's own count


def test_checkpointing_auto_follows_the_memory_estimate(tmp_path, tokenizer):
    trainer = trainer_for(tmp_path, tokenizer)
    args, model = trainer.args, trainer.model
    assert not args.gradient_checkpointing  # a 64-token tiny model: nothing to save
    args.max_length = 10**9  # a step no machine holds
    assert want_checkpointing("auto", model, args, torch.device("cpu"))[0] is True
    assert want_checkpointing(False, model, args, torch.device("cpu"))[0] is False


def test_precision_auto_never_picks_what_the_cpu_lacks():
    assert resolve_precision("fp32", use_cpu=True)[0] == "fp32"
    picked, why = resolve_precision("auto", use_cpu=True)
    assert picked in ("fp32", "bf16") and why
    flags = open("/proc/cpuinfo").read().split()
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        assert picked == "fp32", why


def test_run_prints_its_plan_and_progress(trained_run):
    out, proc = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert "plan: " in proc.stdout and "tokens/s" in proc.stdout
    assert metrics["plan"]["steps"] == metrics["train"]["global_step"]
    logged = [e for e in metrics["log_history"] if "loss" in e]
    assert logged and all(e["train_elapsed_s"] > 0 and "eta_s" in e for e in logged)
    assert logged[-1]["eta_s"] == 0


def test_fused_gelu_gives_the_same_logits():
    model = embedded.build_model()
    ids = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert fuse_activations(model) == model.config.n_layer
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert fuse_activations(model) == 0  # nothing left to swap


def test_reference_pass_leaves_the_random_stream_alone(tmp_path, tokenizer, monkeypatch):
    """A computed pass and a cache hit must leave training the same random stream (exact resume)."""
    from accelerate import PartialState

    from dpo_hub.reference_logps import attach

    trainer = trainer_for(tmp_path, tokenizer, **{"dpo.reference_cache": False})
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "fresh"))
    rng = torch.random.get_rng_state()
    attach(trainer, PartialState())  # computed: iterates a DataLoader, which draws a seed
    assert torch.equal(torch.random.get_rng_state(), rng)
