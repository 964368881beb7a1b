"""Every loss the installed trl implements trains through ``DPOTrainer``, starting where its formula says.

At step 0 a fresh LoRA adapter (B = 0) makes policy and reference identical, so every log-ratio is 0 and
each loss must equal its formula at zero margin. The expected values below are worked out by hand from
each loss's definition (paper or trl docstring), not taken from dpo_hub's code.
"""

from __future__ import annotations

import json
import math

import pytest

from dpo_hub import build_card, embedded, prepare
from dpo_hub.config.losses import trl_loss_types, untrained_loss
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.run import build_trainer

BETA, EPS = 0.1, 0.001
LOG2 = math.log(2)
AT_ZERO_MARGIN = {
    "sigmoid": LOG2,  # -log sigmoid(0)
    "robust": LOG2,  # ((1 - eps) log 2 - eps log 2) / (1 - 2 eps)
    "aot": LOG2,
    "aot_unpaired": LOG2,
    "sigmoid_norm": LOG2,
    "hinge": 1.0,  # relu(1 - 0)
    "apo_zero": 1.0,  # (1 - 1/2) + 1/2
    "apo_down": 1.0,  # 1/2 + (1 - 1/2)
    "ipo": 25.0,  # (0 - 1 / (2 * 0.1)) ** 2
    "sppo_hard": 50.0,  # (0 - 0.5 / 0.1) ** 2 + (0 + 0.5 / 0.1) ** 2
    "nca_pair": 2 * LOG2,  # -log s(0) - 1/2 log s(0) - 1/2 log s(0)
    "bco_pair": 2 * LOG2,  # -log s(0) - log s(0)
    "discopop": (LOG2 + 1.0) / 2,  # logistic log 2 and exp(0) = 1, mixed half and half
    "exo_pair": 0.5 * math.log(0.5 / (1 - EPS)) + 0.5 * math.log(0.5 / EPS),  # KL([.5, .5] || [1 - eps, eps])
}


@pytest.fixture(scope="module")
def tokenizer():
    return embedded.load_tokenizer()


def test_the_installed_trl_is_read_not_assumed():
    losses = trl_loss_types()
    assert {"sigmoid", "ipo", "hinge"} <= set(losses) and "no_such_loss" not in losses
    assert set(losses) <= set(AT_ZERO_MARGIN) | {"sft"}, "a new trl loss: add its zero-margin value here"


def two_steps(tmp_path, tokenizer, changes: dict) -> tuple[list[float], object]:
    """Train 2 steps on 8 embedded pairs with ``changes``; return the logged losses and the trainer."""
    recipe = RECIPE.override(
        {
            "model": "embedded",
            "data.dataset": "embedded",
            "data.limit": 8,
            "data.eval_fraction": 0,
            "dpo.beta": BETA,
            "dpo.max_steps": 2,
            "dpo.logging_steps": 1,
            "dpo.per_device_train_batch_size": 2,
            "dpo.disable_dropout": True,  # dropout would make policy and reference differ at step 0
            "dpo.max_length": 64,
            **changes,
        }
    )
    trainer = build_trainer(recipe, tokenizer, prepare(recipe.data, tokenizer), tmp_path / "checkpoints")
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    lora = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert any(float(p.detach().abs().max()) > 0 for p in lora), "two optimizer steps must move the adapter"
    return losses, trainer


@pytest.fixture(scope="module")
def sft_losses(tmp_path_factory, tokenizer) -> list[float]:
    """The sft loss alone, trained once for this module (its own test and the weighted one read it)."""
    return two_steps(tmp_path_factory.mktemp("sft"), tokenizer, {"dpo.loss_type": "sft"})[0]


@pytest.mark.parametrize("loss_type", trl_loss_types())
def test_every_trl_loss_trains_two_steps_from_its_zero_margin_value(request, tmp_path, tokenizer, loss_type):
    eps = EPS if loss_type == "exo_pair" else 0
    if loss_type == "sft":
        losses = request.getfixturevalue("sft_losses")
    else:
        losses, _ = two_steps(tmp_path, tokenizer, {"dpo.loss_type": loss_type, "dpo.label_smoothing": eps})
    if loss_type == "sft":  # the chosen answers' mean NLL under the untrained model: about log(vocabulary)
        assert 0.5 * math.log(len(tokenizer)) < losses[0] < 2 * math.log(len(tokenizer))
        assert untrained_loss(loss_type, BETA) is None, "no fixed reference line for a model-dependent loss"
    else:
        assert losses[0] == pytest.approx(AT_ZERO_MARGIN[loss_type], rel=2e-3)
        # the loss plot's dotted line sits where step 0 really starts
        assert untrained_loss(loss_type, BETA, eps) == pytest.approx(losses[0], rel=2e-3)


def test_weighted_losses_train_together(tmp_path, tokenizer, sft_losses):
    """sigmoid + 0.5 x sft: trl sums the weighted losses, so step 0 is log 2 + half of sft's step 0 (same
    batch)."""
    losses, trainer = two_steps(
        tmp_path, tokenizer, {"dpo.loss_type": "sigmoid,sft", "dpo.loss_weights": "1.0,0.5"}
    )
    assert trainer.args.loss_type == ["sigmoid", "sft"] and trainer.args.loss_weights == [1.0, 0.5]
    assert losses[0] == pytest.approx(LOG2 + 0.5 * sft_losses[0], rel=1e-3)
    assert untrained_loss(("sigmoid", "sft"), BETA, weights=[1.0, 0.5]) is None, (
        "no line: sft depends on the model"
    )


def test_recipe_and_card_state_each_loss_with_its_weight(tmp_path):
    recipe = RECIPE.override(
        {
            "model": "embedded",
            "data.dataset": "embedded",
            "dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
        }
    )
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    assert (
        "  loss_type: [sigmoid, sft]" in recipe.to_yaml() and "  loss_weights: [1.0, 0.5]" in recipe.to_yaml()
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"data": {"train_pairs": 8, "eval_pairs": 0}}))
    card = str(build_card(tmp_path, "tester/multi"))
    assert (
        "loss `sigmoid x 1.0 + sft x 0.5`" in card and "| dpo.loss_type | sigmoid x 1.0 + sft x 0.5 |" in card
    )
