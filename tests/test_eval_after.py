"""The eval after training and the comparison table are one scoring pass, in the run's precision
(``dpo_hub.training.evaluation``): the derived ``eval_*`` metrics equal trl's real ``evaluate``; a run scores
its eval split once after training; other losses keep trl's evaluate."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, tiny_trainer

from dpo_hub.training import evaluation

TRL_ONLY = {
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
    "epoch",
}  # timings, not scores
TOLERANCE = {"fp32": {"rel": 1e-6, "abs": 1e-5}, "bf16": {"rel": 1e-5, "abs": 1e-4}}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_derived_from_the_comparison_pass_equals_trls_evaluate(tmp_path, tokenizer, precision):
    trainer = tiny_trainer(
        tmp_path,
        tokenizer,
        **{
            "dpo.precision": precision,  # bf16 autocast runs (emulated) on CPUs without AVX-512 BF16 too
            "dpo.max_steps": 3,
            "dpo.learning_rate": 1e-2,  # margins far from 0: no pair is a near-tie
            "dpo.per_device_eval_batch_size": 3,  # divides the 6 eval pairs: trl's batch means = pair means
        },
    )
    trainer.train()
    assert evaluation.why_trl_evaluates(trainer) is None
    forwards = []
    hook = trainer.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    derived, scores, source = evaluation.eval_after_training(trainer)
    assert source == evaluation.FROM_PASS and not forwards, (
        "no forward of trl's own (the pass calls the backbone)"
    )
    assert scores.precision == ("bf16 autocast" if precision == "bf16" else "fp32")
    assert "reference log-probs" in scores.base_from
    logged = trainer.state.log_history[-1]
    assert logged["step"] == 3 and derived.items() <= logged.items(), "logged as trl's evaluation would be"

    measured = trainer.evaluate()  # trl's real evaluation, same trainer, same precision
    hook.remove()
    assert forwards, "trl's evaluation ran the model"
    assert set(measured) - TRL_ONLY == set(derived) - TRL_ONLY, "every eval_* key trl logs, and no other"
    for key in set(measured) - TRL_ONLY:
        assert derived[key] == pytest.approx(measured[key], **TOLERANCE[precision]), key
    assert derived["eval_rewards/accuracies"] == measured["eval_rewards/accuracies"] > 0.5
    assert abs(derived["eval_rewards/margins"]) > 1e-2, "a trained adapter: the test can tell base from tuned"


def test_other_losses_and_settings_keep_trls_evaluate(tmp_path, tokenizer):
    trainer = tiny_trainer(
        tmp_path / "hinge", tokenizer, **{"dpo.loss_type": "hinge", "dpo.precision": "fp32"}
    )
    assert evaluation.why_trl_evaluates(trainer) == "dpo.loss_type hinge"
    forwards = []
    hook = trainer.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    metrics, scores, source = evaluation.eval_after_training(trainer)
    hook.remove()
    assert scores is None and source == f"{evaluation.FROM_TRL} (dpo.loss_type hinge)" and forwards
    # zero margin up to fp32 noise (policy and cached reference summed in different batches: ~1e-6 seen);
    # the sigmoid loss would give log 2 = 0.693
    assert metrics["eval_loss"] == pytest.approx(1.0, abs=1e-4), "hinge at zero margin: trl's own number"

    weighted = tiny_trainer(tmp_path / "wpo", tokenizer, **{"dpo.use_weighting": True, "dpo.ld_alpha": 0.5})
    assert evaluation.why_trl_evaluates(weighted) == "dpo.ld_alpha 0.5; dpo.use_weighting"


def test_a_run_scores_its_eval_split_once_after_training(tmp_path, monkeypatch):
    """In a real ``train``: metrics.json's eval after training is the comparison's numbers, and after the
    last training forward every eval sequence goes through the backbone once tuned (+ once as base, chosen
    only, for KL): no second pass."""
    import torch
    from transformers.models.gpt2.modeling_gpt2 import GPT2Model

    from dpo_hub import train
    from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

    calls = []  # (gradients on, the rows' tokens) of each backbone forward without a KV cache
    forward = GPT2Model.forward

    def counting(self, *args, **kwargs):
        if kwargs.get("use_cache") is False and kwargs.get("input_ids") is not None:
            ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
            rows = [
                tuple(r[m.bool()].tolist()) if mask is not None else tuple(r.tolist())
                for r, m in zip(ids, mask if mask is not None else ids)
            ]
            calls.append((torch.is_grad_enabled(), rows))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT2Model, "forward", counting)
    recipe = RECIPE.override(
        {
            **TINY,
            "dpo.max_steps": -1,  # a whole epoch: every train and eval pair's reference is cached first
            "dpo.precision": "fp32",
            "dpo.learning_rate": 1e-2,
            "generation.prompts": "[]",
        }
    )
    out = train(recipe, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    comparison = json.loads((out / "comparison.json").read_text())
    assert metrics["eval_after_from"] == evaluation.FROM_PASS
    assert (
        metrics["eval_after"]["eval_rewards/accuracies"]
        == comparison["preference"]["reward_accuracy"]["value"]
    )
    assert metrics["eval_after"]["eval_rewards/margins"] == pytest.approx(
        comparison["preference"]["reward_margin"]["mean"], abs=1e-6
    )
    assert comparison["settings"]["precision"] == "fp32" and comparison["settings"]["eval_after_from"]
    assert evaluation.ONE_PASS in (out / "comparison.md").read_text()

    last_step = max(i for i, (grad, _) in enumerate(calls) if grad)
    after = [row for _, rows in calls[last_step + 1 :] for row in rows]
    seen = {row: after.count(row) for row in after}
    pairs = metrics["data"]["eval_pairs"]
    assert len(after) == 3 * pairs and sorted(set(seen.values())) == [1, 2], (
        f"{len(after)} sequence forwards after training for {pairs} pairs: expected one pass (tuned chosen "
        "and rejected, base chosen for KL; base rejected from the reference cache)"
    )


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_pairs_are_trls_sequences_cut_as_its_collator_cuts_them(tmp_path, tokenizer, mode):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    dataset = tiny_trainer(tmp_path, tokenizer).eval_dataset
    cut = 24  # shorter than every pair: each is truncated
    collator = DataCollatorForPreference(pad_token_id=0, max_length=cut, truncation_mode=mode)
    pairs, truncated = evaluation.trl_sequences(dataset, cut, mode)
    assert truncated == len(dataset) == len(pairs)
    for row, pair in enumerate(pairs):
        batch = collator([dataset[row]])
        for side, (ids, start) in enumerate(pair):
            real = batch["attention_mask"][side].bool()
            assert ids == batch["input_ids"][side][real].tolist()
            assert start == int(batch["completion_mask"][side][real].argmax()), "the first answer token"
