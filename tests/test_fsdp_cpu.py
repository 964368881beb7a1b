"""FSDP2 on the CPU, for real: ``accelerate launch --config_file accelerate_configs/fsdp_cpu.yaml`` (2 gloo
processes) against one process with the same effective batch (``cpu.yaml``, per-device batch 2).

Tolerances: both runs are fp32 on the same pairs in the same order (the 2 ranks take the even and odd pairs
of each step's batch of 2), so they differ only in summation order (gloo's averaged gradient shards vs one
batched mean; one row per rank vs two padded rows): measured ~1e-6 on eval loss and reward margins, ~0.2% on
each LoRA update B@A (Adam divides tiny early gradients by their own size, which lifts their rounding). The
bounds below are ~10x those; a reference equal to the policy (trl #6527) zeroes the margins and moves the
derived reference log-probs by ~0.03, far outside them.
"""

from __future__ import annotations

import re

import pytest
from conftest import read_metrics


@pytest.fixture(scope="module")
def runs(small_run):
    """The same recipe on 2 FSDP ranks (batch 1 each) and on 1 process (batch 2): conftest's shared runs."""
    return {name: small_run(name) for name in ("fsdp", "single")}


def test_base_is_sharded_about_half_per_rank(runs):
    out, proc = runs["fsdp"]
    where = ("type", "processes", "machines", "sharded")
    fsdp, single = (read_metrics(runs[name][0])["distributed"] for name in ("fsdp", "single"))
    assert {k: fsdp[k] for k in where} == {"type": "FSDP", "processes": 2, "machines": 1, "sharded": True}
    assert {k: single[k] for k in where} == {"type": "NO", "processes": 1, "machines": 1, "sharded": False}
    held = re.findall(r"FSDP rank (\d): holds (\d+) of (\d+) base parameters", proc.stdout)
    assert sorted(rank for rank, _, _ in held) == ["0", "1"], proc.stdout[-3000:]
    total = int(held[0][2])
    assert sum(int(h) for _, h, _ in held) == total  # the two shards make up the whole base, no copy
    for _, h, _ in held:
        assert 0.4 < int(h) / total < 0.6


def test_card_says_where_it_ran(runs):
    from dpo_hub.hub.card import build_card

    card = str(build_card(runs["fsdp"][0], "someone/fsdp-cpu"))
    assert "| distributed | FSDP, 2 process(es) on 1 machine(s), base weights sharded |" in card
    assert "| quantization | none (full-precision base) |" in card
    assert "| distributed | NO, 1 process(es) on 1 machine(s) |" in str(build_card(runs["single"][0], "a/b"))


def test_same_steps_eval_and_margins_as_one_process(runs):
    fsdp, single = (read_metrics(runs[n][0]) for n in ("fsdp", "single"))
    assert fsdp["train"]["global_step"] == single["train"]["global_step"] == 4
    assert fsdp["effective_batch_size"] == single["effective_batch_size"] == 2
    assert fsdp["eval_after"]["eval_loss"] == pytest.approx(single["eval_after"]["eval_loss"], abs=1e-5)
    margin = single["eval_after"]["eval_rewards/margins"]
    assert margin > 1e-3  # the adapter moved: the comparison below means something
    assert fsdp["eval_after"]["eval_rewards/margins"] == pytest.approx(margin, abs=5e-5)


def _reference_logps(metrics: dict) -> tuple[float, float]:
    """The reference log-probs of the last eval, from trl's logged policy log-probs and rewards:
    reward = beta * (policy - reference)."""
    beta = 0.1
    last = [e for e in metrics["log_history"] if "eval_logps/chosen" in e][-1]
    return tuple(last[f"eval_logps/{s}"] - last[f"eval_rewards/{s}"] / beta for s in ("chosen", "rejected"))


def test_reference_is_the_base_as_in_one_process(runs):
    """trl #6527: under FSDP + LoRA the reference silently equalled the policy. Here the reference log-probs
    after training equal the single process's (whose reference comes from its cache of the base)."""
    fsdp, single = (read_metrics(runs[n][0]) for n in ("fsdp", "single"))
    assert fsdp["levers"]["reference_cache"]["active"] is False
    assert "FSDP" in fsdp["levers"]["reference_cache"]["why"]
    assert single["levers"]["reference_cache"]["active"] is True
    for got, want in zip(_reference_logps(fsdp), _reference_logps(single), strict=True):
        assert got == pytest.approx(want, abs=3e-3)
    last = [e for e in fsdp["log_history"] if "eval_rewards/chosen" in e][-1]
    assert abs(last["eval_rewards/chosen"] - last["eval_rewards/rejected"]) > 1e-3  # policy != reference


def test_adapter_saved_once_as_a_normal_peft_adapter_close_to_one_process(runs):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from dpo_hub import embedded

    fsdp_dir, single_dir = runs["fsdp"][0], runs["single"][0]
    assert [p.name for p in fsdp_dir.glob("*.safetensors")] == ["adapter_model.safetensors"]
    assert (
        "[dpo_hub] saved" in runs["fsdp"][1].stdout and runs["fsdp"][1].stdout.count("[dpo_hub] saved") == 1
    )
    got, want = (
        load_file(fsdp_dir / "adapter_model.safetensors"),
        load_file(single_dir / "adapter_model.safetensors"),
    )
    assert sorted(got) == sorted(want)
    for key in (k for k in got if "lora_A" in k):
        b_key = key.replace("lora_A", "lora_B")
        assert (
            got[key].shape == want[key].shape and got[b_key].shape == want[b_key].shape
        )  # full, not a shard
        update, expected = got[b_key] @ got[key], want[b_key] @ want[key]
        assert (update - expected).norm() / expected.norm() < 0.02, key
    base = embedded.build_model()
    model = PeftModel.from_pretrained(base, str(fsdp_dir))  # plain peft onto the fp32 base
    ids = torch.tensor([[464, 3290, 318, 257]])
    with torch.no_grad():
        tuned = model(ids).logits
        merged = model.merge_and_unload()(ids).logits
    assert torch.allclose(tuned, merged, atol=1e-4)
    assert not torch.allclose(merged, embedded.build_model()(ids).logits, atol=1e-6)  # the adapter changes it
