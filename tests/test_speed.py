"""The speed settings change how fast a run is, never what it computes.

Each lever is checked against the slow path it replaces: the cached reference against trl's per-step
reference, completion-only log-probs against full logits, the timed warm-up against a run without it.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from conftest import first_batch, tiny_trainer
from transformers import set_seed

from dpo_hub import embedded
from dpo_hub.runtime import cache_dir, resolve_precision
from dpo_hub.training.levers import cpu_rows
from dpo_hub.training.levers import model as speedups
from dpo_hub.training.levers.model import bf16_hooks, fuse_activations, want_checkpointing
from dpo_hub.training.plan import make_plan


def trainer_for(tmp_path, tokenizer, **changes):
    return tiny_trainer(tmp_path, tokenizer, **changes)


def cache_files():
    return sorted((cache_dir() / "reference_logps").glob("*/*.json"))


def without_reference(batch):
    return {k: v for k, v in batch.items() if not k.startswith("ref_")}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_reference_gives_trls_loss_and_is_reused(tmp_path, tokenizer, monkeypatch, precision):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    # both precisions: the policy runs under the reference's autocast, so a zero adapter gives exactly log 2
    chosen = {"dpo.precision": precision}
    slow = trainer_for(tmp_path / "a", tokenizer, **chosen, **{"dpo.reference_cache": False})
    fast = trainer_for(tmp_path / "b", tokenizer, **chosen)
    assert not slow.precompute_ref_logps and fast.precompute_ref_logps and slow.reference_cache is None
    assert (
        cache_files() == [] and "ref_chosen_logps" not in fast.train_dataset.column_names
    )  # nothing up front
    batch = first_batch(fast)
    slow.model.eval(), fast.model.eval()
    # the reference trl computes in the step vs the one the cache computes and keeps, as training runs both
    with torch.no_grad(), slow.levers_on(), slow.compute_loss_context_manager():
        expected = slow.compute_loss(slow.model, batch)
    with torch.no_grad(), fast.levers_on(), fast.compute_loss_context_manager():
        got = fast.compute_loss(fast.model, batch)
        again = fast.compute_loss(fast.model, batch)  # now read from the cache
    assert float(got) == pytest.approx(float(expected), abs=1e-6) and float(again) == float(got)
    assert (fast.reference_cache.computed, fast.reference_cache.reused) == (2, 2)
    ref = slow.compute_ref_log_probs(slow.model, batch)
    filled = fast.reference_cache.fill(fast.model, batch)
    assert torch.allclose(ref[0], filled["ref_chosen_logps"], atol=1e-4)
    assert torch.allclose(ref[1], filled["ref_rejected_logps"], atol=1e-4)

    fast.train()  # 2 steps: the pairs they train on are computed once and written when training ends
    assert len(cache_files()) == 1
    known = json.loads(cache_files()[0].read_text())
    assert (
        len(known) == fast.reference_cache.computed
        and fast.reference_cache.computed < len(fast.train_dataset) + 2
    )
    other_lora = trainer_for(
        tmp_path / "c", tokenizer, **chosen, **{"lora.r": 8, "dpo.beta": 0.3}
    )  # same base: a sweep point
    assert other_lora.reference_cache.folder == fast.reference_cache.folder
    assert len(other_lora.reference_cache.values) == len(known)
    set_seed(42)
    other_lora.train()  # the same seed draws the same pairs: all reused, none computed
    assert other_lora.reference_cache.computed == 0 and other_lora.reference_cache.reused > 0
    assert len(cache_files()) == 1, "nothing new to write"
    shorter = trainer_for(
        tmp_path / "d", tokenizer, **chosen, **{"dpo.max_length": 48}
    )  # other tokens: other keys
    short_batch = first_batch(shorter)
    shorter.compute_loss(shorter.model, short_batch)
    assert shorter.reference_cache.computed == 2


def test_completion_only_log_probs_equal_full_logits(tmp_path, tokenizer):
    # installs completion-only scoring on the CPU; fp32: the model is called here without the step's autocast
    trainer = trainer_for(tmp_path, tokenizer, **{"dpo.precision": "fp32"})
    batch = first_batch(trainer)
    model = trainer.model.eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad(), trainer.levers_on():
        fused = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
            fused_lm_head=True,
        ).log_probs
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    full = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None].clamp(min=0))[
        ..., 0
    ]
    scored = labels[:, 1:] != -100
    assert scored.any() and (~scored).any()  # prompts are masked, answers scored
    assert torch.allclose(fused[scored], full[scored], atol=1e-5)
    assert (fused[~scored] == 0).all()


def test_dropout_settings(tmp_path, tokenizer):
    def dropouts(trainer):
        found = {"base": set(), "lora": set()}
        for name, module in trainer.model.named_modules():
            if isinstance(module, torch.nn.Dropout):
                found["lora" if "lora_" in name else "base"].add(module.p)
        return found

    assert dropouts(trainer_for(tmp_path / "a", tokenizer)) == {"base": {0.0}, "lora": {0.0}}  # trl's default
    kept = {"dpo.disable_dropout": False}
    assert dropouts(trainer_for(tmp_path / "b", tokenizer, **kept)) == {"base": {0.0}, "lora": {0.1}}
    both = dropouts(trainer_for(tmp_path / "c", tokenizer, **kept, **{"dpo.base_model_dropout": True}))
    assert both == {"base": {0.1}, "lora": {0.1}}  # GPT-2's config: 0.1


def test_warm_up_leaves_training_unchanged_and_plan_counts_the_tokens(tmp_path, tokenizer, monkeypatch):
    # fp32 and a cache of this test's own: bitwise-equal weights need the same reference values on both sides,
    # and in bf16 a cached value depends by rounding on the batch it was computed in (other tests' batches)
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    epoch = {"dpo.max_steps": -1, "dpo.num_train_epochs": 1.0, "dpo.precision": "fp32"}
    timed, plain = (
        trainer_for(tmp_path / "a", tokenizer, **epoch),
        trainer_for(tmp_path / "b", tokenizer, **epoch),
    )
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


def test_precision_auto_never_picks_what_the_cpu_lacks(monkeypatch):
    assert resolve_precision("fp32", use_cpu=True)[0] == "fp32"
    monkeypatch.delenv("DPO_HUB_CPU_BF16", raising=False)
    picked, why = resolve_precision("auto", use_cpu=True)
    flags = open("/proc/cpuinfo").read().split()
    assert picked == ("bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "fp32"), why
    for forced, expected in (
        ("1", "bf16"),
        ("0", "fp32"),
    ):  # DPO_HUB_CPU_BF16 runs the suite as on the other CPU
        monkeypatch.setenv("DPO_HUB_CPU_BF16", forced)
        picked, why = resolve_precision("auto", use_cpu=True)
        assert picked == expected and f"DPO_HUB_CPU_BF16={forced}" in why, why
        assert resolve_precision("fp32", use_cpu=True)[0] == "fp32", "a set precision is not forced"
    monkeypatch.setenv("DPO_HUB_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="DPO_HUB_CPU_BF16='yes': expected 1"):
        resolve_precision("auto", use_cpu=True)


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


def test_reference_leaves_the_random_stream_alone(tmp_path, tokenizer, monkeypatch):
    """Computing a reference (with dropout kept in training) must leave training the same random stream."""
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "fresh"))
    trainer = trainer_for(
        tmp_path, tokenizer, **{"dpo.disable_dropout": False, "dpo.base_model_dropout": True}
    )
    trainer.model.train()
    batch = first_batch(trainer)
    rng = torch.random.get_rng_state()
    filled = trainer.reference_cache.fill(trainer.model, batch)
    assert trainer.reference_cache.computed == 2 and trainer.model.training
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(
        trainer.reference_cache.fill(trainer.model, batch)["ref_chosen_logps"], filled["ref_chosen_logps"]
    )


def test_trimmed_padding_gives_the_same_loss_and_gradients(tmp_path, tokenizer, monkeypatch):
    """Each row at its own length and the prompt once (CPU) against trl's padded batch: same loss and LoRA
    gradients, through peft's and trl's real calls, with fewer tokens through the model."""
    monkeypatch.setattr(cpu_rows, "SHARED_PREFIX_MIN", 1)
    fp32 = {"dpo.precision": "fp32"}  # the model is called below without the step's autocast
    trimmed = trainer_for(tmp_path / "a", tokenizer, **fp32)
    padded = trainer_for(tmp_path / "b", tokenizer, **fp32)
    assert trimmed.levers["trim_padding"].active  # applied inside levers_on(); `padded` runs trl's own calls
    rows = [trimmed.train_dataset[i] for i in range(len(trimmed.train_dataset))]
    pair = next(r for r in rows if len(r["chosen_ids"]) != len(r["rejected_ids"]))  # padding to trim
    batch = trimmed.data_collator([pair])
    assert (batch["attention_mask"] == 0).any()
    grads, embedded_tokens = [], []
    for trainer in (trimmed, padded):
        trainer.model.eval()
        trainer.reference_cache.fill(trainer.model, batch)  # known: the loss runs the policy forward only
        wte = trainer.model.get_base_model().base_model.wte
        seen = []
        hook = wte.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0].numel()))
        with trimmed.levers_on() if trainer is trimmed else contextlib.nullcontext():
            loss = trainer.compute_loss(trainer.model, batch)
        hook.remove()
        embedded_tokens.append(sum(seen))
        loss.backward()
        grads.append(
            (
                float(loss),
                {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None},
            )
        )
    (loss_a, grads_a), (loss_b, grads_b) = grads
    prompt = len(pair["prompt_ids"])
    # one policy forward each: trl pads and runs the prompt twice; the wrapper does not
    assert embedded_tokens == [int(batch["attention_mask"].sum()) - prompt, batch["input_ids"].numel()]
    assert loss_a == pytest.approx(loss_b, abs=1e-5) and grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-3), name


def test_bf16_saved_activations_halve_the_bytes_and_keep_the_gradients(tmp_path, tokenizer, monkeypatch):
    fp32_step = {"dpo.precision": "fp32"}  # what the lever is for; auto is bf16 autocast on a CPU with bf16
    compact = trainer_for(tmp_path / "a", tokenizer, **fp32_step)
    exact = trainer_for(tmp_path / "b", tokenizer, **fp32_step, **{"dpo.saved_activations": "fp32"})
    pack, unpack = bf16_hooks(compact.model)
    activation = torch.randn(4, 64, 768)
    packed = pack(activation)
    assert packed[0].dtype == torch.bfloat16 and packed[0].nbytes == activation.nbytes // 2
    assert torch.allclose(unpack(packed), activation, rtol=1e-2) and unpack(packed).dtype == torch.float32
    weight = next(p for p in compact.model.parameters() if p.numel() >= 1 << 16)
    assert pack(weight) is weight and pack(weight.t()).dtype == torch.float32, "frozen weights are not copied"
    small = torch.randn(8, 8)
    assert pack(small) is small
    monkeypatch.setattr(speedups, "COMPACT_MIN_VALUES", 1)  # the tiny model's activations are all small
    batch = first_batch(compact)
    results = []
    for trainer in (compact, exact):
        trainer.model.eval()
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        results.append(
            (
                float(loss),
                {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None},
            )
        )
    (loss_c, grads_c), (loss_e, grads_e) = results
    assert loss_c == loss_e, "the forward pass is unchanged"
    assert any(not torch.equal(grads_c[n], grads_e[n]) for n in grads_e), "the hooks were not used"
    for name, grad in grads_e.items():
        assert torch.allclose(grads_c[name], grad, rtol=0.05, atol=0.02 * float(grad.abs().max())), name


def test_a_run_over_every_pair_computes_them_up_front(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    trainer = trainer_for(tmp_path, tokenizer, **{"dpo.max_steps": -1, "dpo.num_train_epochs": 1.0})
    pairs = len(trainer.train_dataset) + len(trainer.eval_dataset)  # it evaluates: both splits
    computed = trainer.reference_cache.computed
    assert 0 < computed <= pairs and len(cache_files()) == 1  # batched pass, written at once
    trainer.compute_loss(trainer.model, first_batch(trainer))
    assert (
        trainer.reference_cache.computed == computed and trainer.reference_cache.reused == 2
    )  # nothing left for the step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_at_a_zero_adapter_is_all_ties(tmp_path, tokenizer, monkeypatch, precision):
    """Before training, policy = reference: every margin is 0 whatever the precision (the eval before training
    runs before accelerate wraps the model's forward in autocast; the reference pass is autocast)."""
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    trainer = trainer_for(tmp_path, tokenizer, **{"dpo.precision": precision})
    metrics = trainer.evaluate()
    assert metrics["eval_rewards/margins"] == 0.0 and metrics["eval_rewards/chosen"] == 0.0
    assert metrics["eval_loss"] == pytest.approx(0.6931471805599453, abs=1e-7)
