"""The ``bf16_base_weights`` lever: frozen matmul weights stored in bf16 under bf16 autocast give bitwise the
same step as fp32-stored weights, and a whole run (generation and comparison included) works with them."""

from __future__ import annotations

import json

import torch
from conftest import TINY, first_batch, tiny_trainer

from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.run import train

BF16 = {"dpo.precision": "bf16"}  # bf16 autocast works on any CPU (emulated without AVX-512 BF16)


def step(trainer, batch):
    """Loss and gradients of one training forward/backward on ``batch``."""
    trainer.model.train()
    with trainer.levers_on(), trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def dtypes(trainer):
    return {n: p.dtype for n, p in trainer.model.named_parameters()}


def test_bf16_stored_base_weights_give_bitwise_the_same_step(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    lever = tiny_trainer(tmp_path / "on", tokenizer, **BF16)
    plain = tiny_trainer(tmp_path / "off", tokenizer, **BF16, **{"dpo.bf16_base_weights": False})
    assert lever.levers["bf16_base_weights"].active, lever.levers["bf16_base_weights"]
    assert not plain.levers["bf16_base_weights"].active
    on, off = dtypes(lever), dtypes(plain)
    halved = [n for n in on if on[n] == torch.bfloat16]
    assert halved and all(off[n] == torch.float32 for n in off), "the lever stored weights in bf16"
    # only frozen matmul weights: LoRA, embeddings (the tied LM head) and norms keep fp32
    assert not any("lora_" in n or "wte" in n or "wpe" in n or "ln_" in n for n in halved), halved
    assert all(not p.requires_grad for n, p in lever.model.named_parameters() if n in halved)
    assert lever.reference_cache.folder == plain.reference_cache.folder, "one reference cache for both"
    batch = first_batch(lever)
    loss_on, grads_on = step(lever, batch)
    loss_off, grads_off = step(plain, batch)
    assert torch.equal(loss_on, loss_off), (float(loss_on), float(loss_off))
    assert grads_on.keys() == grads_off.keys() and grads_on
    for name in grads_on:
        assert torch.equal(grads_on[name], grads_off[name]), name


def test_the_lever_is_off_in_fp32_steps_and_says_why(tmp_path, tokenizer):
    trainer = tiny_trainer(tmp_path, tokenizer, **{"dpo.precision": "fp32"})
    lever = trainer.levers["bf16_base_weights"]
    assert not lever.active and "fp32" in lever.why
    assert all(dtype == torch.float32 for dtype in dtypes(trainer).values())


def test_a_run_with_bf16_base_weights_trains_evaluates_and_compares(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    out = train(RECIPE.override({**TINY, **BF16}), tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["levers"]["bf16_base_weights"]["active"]
    assert metrics["comparison"] is not None and metrics["generations"]
    assert metrics["eval_after"]["eval_loss"] > 0
