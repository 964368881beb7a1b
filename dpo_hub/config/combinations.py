"""Combinations of ``dpo.*`` settings that trl refuses only once the trainer is built (after the data is
staged and the model loaded), or that it silently ignores, and ``lora.*`` settings peft ignores: checked
when the presets are built.

Each rule is trl's own (its ``DPOTrainer.__init__`` and loss code), restated so that the error names the
recipe keys and the fix before anything loads; ``tests/test_reliability.py`` checks each against the
installed trl.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dpo_hub.config.losses import label_smoothing_losses
from dpo_hub.errors import RecipeError

SORTING_LOSSES = ("aot", "aot_unpaired")  # they sort the batch: per-pair weights would be misaligned


def check_dpo(
    losses: Sequence[str],
    label_smoothing: float,
    gradient_accumulation_steps: int,
    effective_batch_size: int | None,
    extra: Mapping[str, Any],
) -> None:
    """Refuse a combination of DPO settings trl would refuse after staging, or silently ignore."""
    loss = ",".join(losses)
    if "exo_pair" in losses and label_smoothing == 0:
        raise RecipeError(
            "dpo.loss_type=exo_pair needs dpo.label_smoothing > 0 (trl refuses 0; the EXO paper uses 1e-3): "
            "add --dpo.label_smoothing 0.001"
        )
    if label_smoothing and not set(losses) & set(label_smoothing_losses()):
        raise RecipeError(
            f"dpo.label_smoothing={label_smoothing} has no effect with dpo.loss_type={loss}: trl reads it "
            f"only in {', '.join(label_smoothing_losses())}; remove dpo.label_smoothing or pick one of those "
            "losses"
        )
    if effective_batch_size is not None and gradient_accumulation_steps != 1:
        raise RecipeError(
            f"dpo.gradient_accumulation_steps={gradient_accumulation_steps} conflicts with "
            f"dpo.effective_batch_size={effective_batch_size} (which sets the accumulation for the number "
            "of processes): set only one of them"
        )
    if extra.get("sync_ref_model"):
        raise RecipeError(
            "dpo.sync_ref_model: true cannot work with LoRA (the reference is the base model with the "
            "adapter off; there is no reference copy to sync): remove dpo.sync_ref_model"
        )
    divergence = extra.get("f_divergence_type", "reverse_kl")
    divergence = getattr(divergence, "value", divergence)
    allowed = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
    if divergence != "reverse_kl" and not set(losses) <= set(allowed):
        raise RecipeError(
            f"dpo.f_divergence_type={divergence} works only with the losses {', '.join(allowed)} and "
            f"dpo.loss_type is {loss}: remove dpo.f_divergence_type or change dpo.loss_type"
        )
    if extra.get("use_weighting") and set(losses) & set(SORTING_LOSSES):
        raise RecipeError(
            f"dpo.use_weighting: true is not implemented for dpo.loss_type={loss} (aot losses sort the "
            "batch): remove dpo.use_weighting or change dpo.loss_type"
        )
    if extra.get("padding_free"):
        raise RecipeError(
            "dpo.padding_free: true has no effect in the installed trl (it falls back to padding): remove it"
        )
    if (extra.get("liger_kernel_config") or {}).get("fused_linear_cross_entropy"):
        raise RecipeError(
            "dpo.liger_kernel_config: fused_linear_cross_entropy is refused by trl's DPOTrainer (it replaces "
            "the forward trl fuses with the LM head): set it to false or remove it"
        )


def check_lora(extra: Mapping[str, Any]) -> None:
    """Refuse a LoRA setting peft would ignore."""
    if extra.get("loftq_config") and extra.get("init_lora_weights") != "loftq":
        raise RecipeError(
            "lora.loftq_config has no effect unless lora.init_lora_weights is loftq (peft ignores it): set "
            "lora.init_lora_weights: loftq or remove lora.loftq_config"
        )
