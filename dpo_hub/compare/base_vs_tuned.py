"""Base vs tuned, side by side: one loaded PEFT model, the adapter toggled on and off.

Generations, preference accuracy on held-out pairs (``compare_scoring``), an optional reward-model
judge; the numbers and files are ``compare_report``'s. Every setting is an explicit parameter: loading
a run folder or Hub repo (and its recipe) is ``dpo_hub.hub.runs``'s job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from dpo_hub.compare.report import Comparison, summarize, summarize_judge
from dpo_hub.compare.scoring import PairScores, adapter_off, context_length, score_pairs
from dpo_hub.config.presets import Generation
from dpo_hub.data.adapters import ADAPTERS, Preferences, convert
from dpo_hub.data.files import load_rows
from dpo_hub.data.pairs import Pair
from dpo_hub.errors import CompareError, DataError

log = logging.getLogger("dpo_hub")
__all__ = ["Comparison", "compare_model", "generate", "judge_generations", "load_pairs", "side_by_side"]


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompt: str, settings: Any) -> str:
    """One seeded answer to ``prompt`` with ``settings`` (a ``Generation``)."""
    device = next(model.parameters()).device
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    torch.manual_seed(settings.seed)
    output = model.generate(
        **inputs,
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def side_by_side(
    model: Any, tokenizer: Any, settings: Any, prompt_text: Callable[[str], str] | None = None
) -> list[dict[str, Any]]:
    """Each prompt answered by the base (adapter off) and the tuned model with identical settings.

    ``prompt_text`` formats a prompt as training did (``DataAdapter.prompt_text``: chat template, separator).
    """
    was_training = model.training
    model.eval()
    rows = []
    for prompt in settings.prompts:
        text = prompt_text(prompt) if prompt_text else prompt
        with adapter_off(model):
            base = generate(model, tokenizer, text, settings)
        tuned = generate(model, tokenizer, text, settings)
        rows.append({"prompt": prompt, "base": base, "tuned": tuned, "differ": base != tuned})
    model.train(was_training)
    return rows


# ---- judge ---------------------------------------------------------------------------------------
@torch.inference_mode()
def judge_generations(judge: str, generations: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward of each prompt + answer, base and tuned, under reward model ``judge`` (a single-output
    classifier)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_model = AutoModelForSequenceClassification.from_pretrained(judge, trust_remote_code=False).eval()
    if reward_model.config.num_labels != 1:
        raise CompareError(
            f"judge {judge!r} has {reward_model.config.num_labels} outputs; a reward model has 1"
        )
    tokenizer = AutoTokenizer.from_pretrained(judge)
    limit = context_length(reward_model)

    def reward(prompt: str, answer: str) -> float:
        inputs = tokenizer(prompt + answer, return_tensors="pt", truncation=bool(limit), max_length=limit)
        return float(reward_model(**inputs).logits[0, 0])

    rows = [
        {
            "prompt": g["prompt"],
            "base": reward(g["prompt"], g["base"]),
            "tuned": reward(g["prompt"], g["tuned"]),
        }
        for g in generations
    ]
    return {"judge": judge, "scores": rows}


# ---- comparing -----------------------------------------------------------------------------------
def compare_model(
    model: Any,
    tokenizer: Any,
    pairs: Any = None,
    prompts: Iterable[str] | None = None,
    generation: Generation | None = None,
    judge: str | None = None,
    beta: float = 0.1,
    max_length: int | None = None,
    batch_size: int = 16,
    source: str = "model",
    generations: list[dict[str, Any]] | None = None,
    prompt_text: Callable[[str], str] | None = None,
    scores: PairScores | None = None,
) -> Comparison:
    """Compare a loaded PEFT model (tuned) with itself under ``adapter_off`` (base).

    ``pairs``: see ``load_pairs``; ``prompts`` replace ``generation.prompts`` (``[]``: none);
    ``generations``: rows already made by ``side_by_side``, reused instead of generating again;
    ``prompt_text``: formats prompts as training did (see ``side_by_side``); ``scores``: the pairs scored
    already (a training run's eval split, ``dpo_hub.training.evaluation``), used instead of ``pairs``.
    Forward passes run in the caller's precision (its autocast, else the weights' dtype).
    """
    if not hasattr(model, "disable_adapter"):
        raise CompareError(
            f"{source}: not a PEFT model with an adapter, so there is no base/tuned difference"
        )
    generation = generation or Generation()
    if prompts is not None:
        generation = dataclasses.replace(generation, prompts=tuple(prompts))
    pair_rows = load_pairs(pairs, tokenizer) if scores is None else []
    if not generation.prompts and not pair_rows and scores is None:
        raise CompareError(f"{source}: nothing to compare; give at least one prompt or some preference pairs")
    if generations is None:
        generations = side_by_side(model, tokenizer, generation, prompt_text) if generation.prompts else []
    if scores is None and pair_rows:
        scores = score_pairs(model, tokenizer, pair_rows, batch_size, max_length)
    preference, per_pair = summarize(scores, beta) if scores is not None else (None, [])
    return Comparison(
        source=source,
        generations=generations,
        preference=preference,
        per_pair=per_pair,
        judge=summarize_judge(judge_generations(judge, generations)) if judge and generations else None,
        settings={
            "generation": dataclasses.asdict(generation),
            "beta": beta,
            "batch_size": batch_size,
            "max_length": max_length or context_length(model),
            "pairs": _describe(pairs),
            "scoring": "trl DPOTrainer style: response = completion + eos after the prompt; prompt and "
            "padding masked; adapter on = tuned, off = base",
            "precision": scores.precision if scores is not None else None,
            "base": scores.base_from if scores is not None else None,
        },
    )


def load_pairs(pairs: Any, tokenizer: Any = None) -> list[Pair]:
    """Preference pairs from None, a file path or Hub dataset id, a data adapter, or rows (dicts/Dataset)."""
    if pairs is None:
        return []
    if isinstance(pairs, (str, Path)):
        pairs = Preferences(dataset=str(pairs), limit=None, eval_fraction=0.0)
    adapter = pairs if isinstance(pairs, tuple(ADAPTERS.values())) else Preferences()
    if adapter is pairs:
        rows, name = load_rows(adapter), adapter.dataset
    else:
        rows, name = list(pairs), "pairs"
        for index, row in enumerate(rows):
            missing = [c for c in adapter.columns if c not in row]
            if missing:
                raise DataError(f"{name}: row {index} has no column(s) {missing}; found {sorted(row)}")
    out, dropped, _ = convert(adapter, rows, tokenizer)
    if dropped:
        log.warning("%s: dropped %d pair(s): %s", name, sum(dropped.values()), dict(dropped))
    if not out and len(rows):
        raise DataError(f"{name}: no usable pairs ({dict(dropped)})")
    return out


def _describe(pairs: Any) -> str | None:
    if pairs is None or isinstance(pairs, (str, Path)):
        return None if pairs is None else str(pairs)
    return getattr(pairs, "dataset", None) or f"{type(pairs).__name__} of {len(pairs)} rows"
