"""A run's cost, shown before it starts (pairs, steps, tokens, time and memory) and while it runs.

The time estimate comes from a timed warm-up: one forward and backward pass on the longest training batch,
with the random state saved and restored, no optimizer step and the gradients cleared, so training is
unchanged by it.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

from transformers import TrainerCallback

from dpo_hub import upstream

log = logging.getLogger("dpo_hub")
LONG_RUN_S = 3600  # on a CPU, above this the log says how to make the run smaller


@dataclass
class Plan:
    pairs: int
    steps: int
    tokens: int  # non-padding tokens the optimizer steps will see (prompt + answer, both sides)
    seconds_per_token: float | None  # from the warm-up; None when it was skipped
    peak_memory_gb: float | None
    reference_s: float = 0.0  # spent by the warm-up computing its pair's reference (cached for training)

    @property
    def estimated_s(self) -> float | None:
        return None if self.seconds_per_token is None else self.tokens * self.seconds_per_token

    def to_dict(self) -> dict:
        return {**asdict(self), "estimated_s": self.estimated_s}


def pair_tokens(dataset: Any, max_length: int | None) -> list[int]:
    """Tokens of each pair as trained: prompt + chosen and prompt + rejected, each cut to ``max_length``."""
    cap = max_length or 10**9
    return [
        min(cap, len(p) + len(c)) + min(cap, len(p) + len(r))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
    ]


def make_plan(trainer: Any, warm_up: bool = True) -> Plan:
    """Count the run's work and time one step on its longest pair (``warm_up``)."""
    args = trainer.args
    tokens = pair_tokens(trainer.train_dataset, args.max_length)
    per_update = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    steps = (
        args.max_steps if args.max_steps > 0 else int(args.num_train_epochs * -(-len(tokens) // per_update))
    )
    pairs_seen = min(steps * per_update, int(len(tokens) * max(args.num_train_epochs, 1)))
    total = int(sum(tokens) / len(tokens) * pairs_seen) if tokens else 0
    seconds_per_token, reference_s = None, 0.0
    if warm_up and tokens:
        longest = max(range(len(tokens)), key=tokens.__getitem__)
        step_s, reference_s = _time_step(trainer, longest)
        seconds_per_token = (step_s + reference_s) / tokens[longest] / args.world_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return Plan(
        pairs=len(tokens),
        steps=steps,
        tokens=total,
        seconds_per_token=seconds_per_token,
        peak_memory_gb=peak,
        reference_s=reference_s,
    )


def _time_step(trainer: Any, row: int) -> tuple[float, float]:
    """Seconds of one forward + backward on train row ``row`` (twice: the first call warms the kernels), and
    of the reference forward the first call made if the pair was not cached (a cold cache costs it for every
    pair)."""
    import torch

    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[row]])
    batch = {k: v.to(trainer.accelerator.device) if hasattr(v, "to") else v for k, v in batch.items()}
    was_training, tokens_before = model.training, upstream.tokens_counted(trainer)
    model.train()
    elapsed = 0.0
    reference = getattr(
        trainer, "reference_cache", None
    )  # a pair's reference is computed on its first use only
    reference_s = reference.seconds if reference else 0.0
    with torch.random.fork_rng(devices=[]), _levers_on(trainer):
        for _ in range(2):
            started = time.perf_counter()
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(model, batch)
            loss.backward()
            elapsed = time.perf_counter() - started
            model.zero_grad(set_to_none=True)
    model.train(was_training)
    if upstream.missing(upstream.TRL_STEP_METRICS, upstream.TRL_TOKEN_COUNT, instance=trainer) is None:
        upstream.forget_step(
            trainer, tokens_before
        )  # the warm-up's metrics and tokens are not the first step's
    return elapsed, (reference.seconds - reference_s) if reference else 0.0


def _levers_on(trainer: Any) -> Any:
    """The trainer's levers for the timed step (a plain trl trainer has none)."""
    import contextlib

    return trainer.levers_on() if hasattr(trainer, "levers_on") else contextlib.nullcontext()


def describe(plan: Plan, use_cpu: bool) -> list[str]:
    """The plan as log lines; on a CPU a run estimated over an hour says how to make it smaller."""
    lines = [f"plan: {plan.pairs} train pairs, {plan.steps} optimizer steps, {plan.tokens:,} tokens"]
    if plan.estimated_s is not None:
        lines[0] += (
            f"; ~{_duration(plan.estimated_s)} on this hardware (from a timed step on the longest pair)"
        )
    if plan.peak_memory_gb is not None:
        lines[0] += f"; peak memory so far {plan.peak_memory_gb:.2f} GB"
    if use_cpu and (plan.estimated_s or 0) > LONG_RUN_S:
        lines.append(
            "this run is long on a CPU: --data.limit 200 trains on fewer pairs, and "
            "recipes/gpt2_ultrafeedback_tutorial.yaml is the tutorial's 45-pair run; the recipe is unchanged"
        )
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress(TrainerCallback):
    """Adds ``train_elapsed_s``, ``tokens_per_s`` and ``eta_s`` to each logged step and logs them."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        self.first_step = state.global_step  # a resumed run times from where it resumed

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.started is None or not state.log_history or "num_tokens" not in state.log_history[-1]:
            return
        entry = state.log_history[-1]
        elapsed = time.perf_counter() - self.started
        done = state.global_step - self.first_step
        rate = (
            entry["num_tokens"] / elapsed if elapsed > 0 and self.first_step == 0 else None
        )  # fresh runs only
        eta = elapsed / done * (state.max_steps - state.global_step) if done else None
        entry.update(
            train_elapsed_s=round(elapsed, 3),
            **({"tokens_per_s": round(rate, 1)} if rate else {}),
            **({"eta_s": round(eta, 1)} if eta is not None else {}),
        )
        if state.is_world_process_zero:
            log.info(
                "step %d/%d: %s%s left",
                state.global_step,
                state.max_steps,
                f"{rate:,.0f} tokens/s, " if rate else "",
                _duration(eta) if eta is not None else "?",
            )
