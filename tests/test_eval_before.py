"""The eval before training costs no pass where its result is known: a fresh LoRA adapter is the reference."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_trainer

from dpo_hub.training.run import _pick, _untrained_eval


def test_a_fresh_adapter_is_scored_without_a_pass_and_equals_trls_evaluation(tmp_path, tokenizer):
    trainer = tiny_trainer(tmp_path, tokenizer, **{"dpo.precision": "fp32"})
    forwards = []
    hook = trainer.model.register_forward_hook(lambda *_: forwards.append(1))
    known = _untrained_eval(trainer)
    assert known is not None and not forwards, "no forward pass"
    logged = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(logged) == 1 and logged[0]["step"] == 0 and known.items() <= logged[0].items(), (
        "logged at step 0 like trl's evaluation (the loss curve's first eval point)"
    )
    measured = _pick(trainer.evaluate())
    hook.remove()
    assert forwards, "trl's evaluation ran the model"
    assert measured == pytest.approx(known, abs=1e-5)

    with torch.no_grad():  # a trained (or differently initialised) adapter: trl evaluates
        next(p for n, p in trainer.model.named_parameters() if "lora_B" in n)[0, 0] = 1e-3
    assert _untrained_eval(trainer) is None


def test_losses_whose_start_depends_on_the_model_are_evaluated(tmp_path, tokenizer):
    trainer = tiny_trainer(tmp_path, tokenizer, **{"dpo.loss_type": "sigmoid,sft"})
    assert _untrained_eval(trainer) is None
