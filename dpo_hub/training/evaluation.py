"""The eval after training and the comparison table from one scoring pass, in the run's precision.

A run's comparison scores its eval split the way trl's eval sees it: trl's own tokens of the split (the
trainer's ``eval_dataset``), cut at ``dpo.max_length`` as trl's collator cuts them, under the trainer's
autocast (the precision the run trained, evaluated and cached its reference in). Where trl's eval is a
function of those per-pair log-probs alone (:func:`why_trl_evaluates` is ``None``: one process, trl's
plain sigmoid loss, nothing else that changes a pair's numbers), trl's ``evaluate`` is not run again: the
base column is the run's reference log-probs (the ones trl's eval reads), and the ``eval_*`` metrics trl
logs are derived from the same pass (:func:`eval_metrics`) and logged through ``trainer.log``. So the eval
after training and the comparison table are one set of numbers. Elsewhere trl evaluates as always, in the
same precision as the table.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from transformers import TrainerCallback

from dpo_hub import upstream
from dpo_hub.compare.scoring import PairScores, Sequence, score_sequences
from dpo_hub.training.reference import pair_keys

log = logging.getLogger("dpo_hub")
FROM_PASS = "comparison pass"
FROM_TRL = "trl evaluate"
ONE_PASS = "one pass: trl's eval after training == this table"


def why_trl_evaluates(trainer: Any) -> str | None:
    """Why the eval after training cannot be derived from the comparison's pass (trl's ``evaluate`` runs), or
    ``None`` when trl's per-pair numbers are exactly the pass's log-probs and the run's reference."""
    args, model = trainer.args, trainer.accelerator.unwrap_model(trainer.model)
    config = getattr(model, "peft_config", {})
    checks = (
        (trainer.accelerator.num_processes != 1, f"{trainer.accelerator.num_processes} processes"),
        (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled, "sharded weights (FSDP/DeepSpeed)"),
        (not config or "ref" in config, "no fresh LoRA adapter (the reference is not the base)"),
        (list(args.loss_type) != ["sigmoid"], f"dpo.loss_type {','.join(args.loss_type)}"),
        (args.loss_weights not in (None, [1.0]), f"dpo.loss_weights {args.loss_weights}"),
        (args.f_divergence_type != "reverse_kl", f"dpo.f_divergence_type {args.f_divergence_type}"),
        (args.ld_alpha is not None, f"dpo.ld_alpha {args.ld_alpha}"),
        (args.use_weighting, "dpo.use_weighting"),
        (trainer.aux_loss_enabled, "the model's router auxiliary loss"),
        (args.dataloader_drop_last, "dpo.dataloader_drop_last"),
        (args.load_best_model_at_end, "dpo.load_best_model_at_end (it reads trl's eval at each save)"),
        (trainer.compute_metrics is not None, "a compute_metrics function"),
        (not _tokenized(trainer.eval_dataset), "the eval split is not trl's tokenised dataset"),
    )
    reasons = [why for failed, why in checks if failed]
    return "; ".join(reasons) or None


def score_eval_split(trainer: Any, model: Any, batch_size: int = 16) -> PairScores:
    """The trainer's eval split scored under ``model`` (tuned, adapter off = base) in the trainer's precision.

    Where :func:`why_trl_evaluates` is ``None`` the base log-probs are the run's reference (the reference
    cache, or trl's precomputed columns), as trl's eval reads them; otherwise a base forward scores both
    answers."""
    args = trainer.args
    pairs, truncated = trl_sequences(trainer.eval_dataset, args.max_length, args.truncation_mode)
    reference, reference_from = None, ""
    if why_trl_evaluates(trainer) is None:
        reference, reference_from = run_reference(trainer)
    pad_id = trainer.processing_class.pad_token_id
    with trainer.accelerator.autocast():
        scores = score_sequences(
            model,
            pairs,
            0 if pad_id is None else pad_id,
            batch_size,
            reference=reference,
            reference_from=reference_from,
        )
    scores.truncated = truncated
    return scores


def trl_sequences(
    dataset: Any, max_length: int | None, truncation_mode: str = "keep_start"
) -> tuple[list[tuple[Sequence, Sequence]], int]:
    """(chosen, rejected) of each row of trl's tokenised ``dataset`` as trl's collator builds them: prompt +
    answer, cut to ``max_length`` (its first or last tokens); and how many pairs were cut."""
    pairs, truncated = [], 0
    for prompt, chosen, rejected in zip(*(dataset[c] for c in ("prompt_ids", "chosen_ids", "rejected_ids"))):
        pair = []
        for answer in (chosen, rejected):
            ids, start = prompt + answer, len(prompt)
            if max_length is not None and len(ids) > max_length:
                cut = len(ids) - max_length
                ids, start = (
                    (ids[:max_length], start) if truncation_mode == "keep_start" else (ids[cut:], start - cut)
                )
            pair.append((ids, max(start, 0)))
        truncated += any(
            len(p) + len(a) > (max_length or math.inf) for p, a in ((prompt, chosen), (prompt, rejected))
        )
        pairs.append((pair[0], pair[1]))
    return pairs, truncated


def run_reference(trainer: Any) -> tuple[list[tuple[float, float]] | None, str]:
    """The reference log-probs trl's eval reads for each eval pair where the run has them already: trl's
    precomputed columns, or the reference cache when it holds every eval pair (``(None, "")`` otherwise: the
    pass's own base forward is then as cheap as computing them)."""
    dataset = trainer.eval_dataset
    if "ref_chosen_logps" in dataset.column_names:
        known = list(zip(dataset["ref_chosen_logps"], dataset["ref_rejected_logps"]))
        return known, "trl's precomputed reference log-probs"
    cache = trainer.reference_cache
    if cache is None:
        return None, ""
    size, batches = trainer.args.per_device_eval_batch_size, []
    columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    for at in range(0, len(columns), size):
        batches.append(trainer.data_collator([columns[i] for i in range(at, min(at + size, len(columns)))]))
        if any(key not in cache.values for key in pair_keys(batches[-1])):
            return None, ""
    values: list[tuple[float, float]] = []
    with trainer.levers_on():
        for batch in batches:
            filled = cache.fill(trainer.model, batch)  # all known: counted as reused, nothing computed
            values += zip(filled["ref_chosen_logps"].tolist(), filled["ref_rejected_logps"].tolist())
    return values, "the run's cached reference log-probs (what trl's eval reads)"


def eval_metrics(trainer: Any, scores: PairScores, seconds: float) -> dict[str, float]:
    """The ``eval_*`` metrics trl's ``evaluate`` logs, from the pass's per-pair log-probs (sigmoid loss).

    Means are over pairs (log-probs, rewards, accuracy, loss) or response tokens (entropy, logits, token
    accuracy) of the whole split; trl averages its batches' means, which equals these whenever
    ``per_device_eval_batch_size`` divides the split (a short last batch moves trl's value slightly)."""
    n, beta = len(scores.tuned_chosen), trainer.args.beta
    chosen = [beta * (t - b) for t, b in zip(scores.tuned_chosen, scores.base_chosen)]
    rejected = [beta * (t - b) for t, b in zip(scores.tuned_rejected, scores.base_rejected)]
    margins = [c - r for c, r in zip(chosen, rejected)]
    chosen_tokens, rejected_tokens = sum(scores.chosen_tokens), sum(scores.rejected_tokens)
    steps = math.ceil(n / trainer.args.per_device_eval_batch_size)
    return {
        "eval_loss": sum(_softplus(-m) for m in margins) / n,  # -logsigmoid(beta * delta)
        "eval_runtime": round(seconds, 4),
        "eval_samples_per_second": round(n / seconds, 3),
        "eval_steps_per_second": round(steps / seconds, 3),
        "eval_entropy": (sum(scores.chosen_entropy) + sum(scores.rejected_entropy))
        / (chosen_tokens + rejected_tokens),
        "eval_num_tokens": float(upstream.tokens_counted(trainer)),
        "eval_logits/chosen": sum(scores.chosen_mean_logit) / chosen_tokens,
        "eval_logits/rejected": sum(scores.rejected_mean_logit) / rejected_tokens,
        "eval_mean_token_accuracy": sum(scores.chosen_top1) / chosen_tokens,
        "eval_rewards/chosen": sum(chosen) / n,
        "eval_rewards/rejected": sum(rejected) / n,
        "eval_rewards/accuracies": sum(m > 0 for m in margins) / n,  # a tie is a miss, as in trl
        "eval_rewards/margins": sum(margins) / n,
        "eval_logps/chosen": sum(scores.tuned_chosen) / n,
        "eval_logps/rejected": sum(scores.tuned_rejected) / n,
    }


def eval_after_training(trainer: Any) -> tuple[dict[str, float], PairScores | None, str]:
    """trl's eval after training: derived from the comparison's pass where :func:`why_trl_evaluates` is
    ``None`` (returns that pass's scores too), else ``trainer.evaluate()``; and how it was obtained."""
    why = why_trl_evaluates(trainer)
    if why is not None:
        log.info("eval after training: trl evaluates (%s)", why)
        return trainer.evaluate(), None, f"{FROM_TRL} ({why})"
    started = time.perf_counter()
    scores = score_eval_split(trainer, trainer.accelerator.unwrap_model(trainer.model))
    metrics = eval_metrics(trainer, scores, time.perf_counter() - started)
    _log_as_trl(trainer, metrics)
    return metrics, scores, FROM_PASS


class NoEvalAtLastStep(TrainerCallback):
    """No trl evaluation at the last training step (``eval_strategy`` epoch or steps): the eval after
    training, derived from the comparison's pass, takes its place at that step. Earlier ones are trl's."""

    def on_step_end(self, args, state, control, **kwargs):
        return self._skip_last(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        return self._skip_last(state, control)

    @staticmethod
    def _skip_last(state: Any, control: Any) -> Any:
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = False
        return control


def _log_as_trl(trainer: Any, metrics: dict[str, float]) -> None:
    """Log ``metrics`` as trl's ``evaluate`` does: ``trainer.log`` (eval mode: trl adds no train metrics),
    then the callbacks' ``on_evaluate``."""
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        trainer.log(dict(metrics))
    finally:
        model.train(was_training)
    trainer.control = trainer.callback_handler.on_evaluate(
        trainer.args, trainer.state, trainer.control, metrics
    )


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _tokenized(dataset: Any) -> bool:
    columns = getattr(dataset, "column_names", None)
    return isinstance(columns, list) and {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(columns)
