"""Base vs tuned, side by side: one model in memory, the adapter toggled on and off.

Generations, preference accuracy on held-out pairs (``compare_scoring``), an optional reward-model
judge, and the report files (``compare_report``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from dpo_hub.compare_report import Comparison, format_table, summarize, summarize_judge, write_outputs
from dpo_hub.compare_scoring import adapter_off, context_length, score_pairs
from dpo_hub.data import ADAPTERS, DataError, Pair, Preferences, convert, load_rows, prepare
from dpo_hub.recipe import Generation, Recipe

log = logging.getLogger("dpo_hub")
__all__ = ["Comparison", "compare", "compare_after_training", "compare_cli", "compare_model", "format_table"]


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompt: str, settings: Any) -> str:
    """One seeded answer to ``prompt`` with ``settings`` (a ``Generation``)."""
    device = next(model.parameters()).device
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    torch.manual_seed(settings.seed)
    output = model.generate(
        **inputs, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def side_by_side(model: Any, tokenizer: Any, settings: Any) -> list[dict[str, Any]]:
    """Each prompt answered by the base (adapter off) and the tuned model with identical settings."""
    was_training = model.training
    model.eval()
    rows = []
    for prompt in settings.prompts:
        with adapter_off(model):
            base = generate(model, tokenizer, prompt, settings)
        tuned = generate(model, tokenizer, prompt, settings)
        rows.append({"prompt": prompt, "base": base, "tuned": tuned, "differ": base != tuned})
    model.train(was_training)
    return rows


def format_side_by_side(rows: list[dict[str, Any]], width: int = 100) -> str:
    """Plain-text view of ``side_by_side`` rows for the terminal and ``generations.md``."""
    lines = []
    for row in rows:
        lines += [f"### {row['prompt']}", "", "**base**:", "", row["base"].strip() or "(empty)", "",
                  "**tuned**:", "", row["tuned"].strip() or "(empty)", "",
                  f"_answers differ: {'yes' if row['differ'] else 'no'}_", ""]
    return "\n".join(line[:width * 4] for line in lines)


# ---- judge ---------------------------------------------------------------------------------------
@torch.inference_mode()
def judge_generations(judge: str, generations: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward of each prompt + answer, base and tuned, under reward model ``judge`` (a single-output classifier)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_model = AutoModelForSequenceClassification.from_pretrained(judge, trust_remote_code=False).eval()
    if reward_model.config.num_labels != 1:
        raise ValueError(f"judge {judge!r} has {reward_model.config.num_labels} outputs; a reward model has 1")
    tokenizer = AutoTokenizer.from_pretrained(judge)
    limit = context_length(reward_model)

    def reward(prompt: str, answer: str) -> float:
        inputs = tokenizer(prompt + answer, return_tensors="pt", truncation=bool(limit), max_length=limit)
        return float(reward_model(**inputs).logits[0, 0])

    rows = [{"prompt": g["prompt"], "base": reward(g["prompt"], g["base"]), "tuned": reward(g["prompt"], g["tuned"])}
            for g in generations]
    return {"judge": judge, "scores": rows}


# ---- comparing -----------------------------------------------------------------------------------
def compare_model(model: Any, tokenizer: Any, pairs: Any = None, prompts: Iterable[str] | None = None,
                  generation: Generation | None = None, judge: str | None = None, beta: float = 0.1,
                  max_length: int | None = None, batch_size: int = 16, source: str = "model",
                  generations: list[dict[str, Any]] | None = None) -> Comparison:
    """Compare a loaded PEFT model (tuned) with itself under ``adapter_off`` (base).

    ``pairs``: see ``load_pairs``; ``prompts`` replace ``generation.prompts`` (``[]``: none);
    ``generations``: rows already made by ``side_by_side``, reused instead of generating again.
    """
    if not hasattr(model, "disable_adapter"):
        raise ValueError(f"{source}: not a PEFT model with an adapter, so there is no base/tuned difference")
    generation = generation or Generation()
    if prompts is not None:
        generation = dataclasses.replace(generation, prompts=tuple(prompts))
    pair_rows = load_pairs(pairs, tokenizer)
    if not generation.prompts and not pair_rows:
        raise ValueError(f"{source}: nothing to compare; give at least one prompt or some preference pairs")
    if generations is None:
        generations = side_by_side(model, tokenizer, generation) if generation.prompts else []
    preference, per_pair = (summarize(score_pairs(model, tokenizer, pair_rows, batch_size, max_length), beta)
                            if pair_rows else (None, []))
    return Comparison(
        source=source, generations=generations, preference=preference, per_pair=per_pair,
        judge=summarize_judge(judge_generations(judge, generations)) if judge and generations else None,
        settings={"generation": dataclasses.asdict(generation), "beta": beta, "batch_size": batch_size,
                  "max_length": max_length or context_length(model), "pairs": _describe(pairs),
                  "scoring": "trl DPOTrainer style: response = completion + eos after the prompt; prompt and "
                             "padding masked; adapter on = tuned, off = base"},
    )


def compare(source: Any, prompts: Iterable[str] | None = None, pairs: Any = None, judge: str | None = None,
            output_dir: str | Path | None = None, revision: str | None = None, batch_size: int = 16,
            generation: Generation | None = None) -> Comparison:
    """Compare base and tuned for a run folder, a Hub repo id, or a loaded ``(peft_model, tokenizer)``.

    A run's recipe (its folder's, or the one pushed with it) gives the default ``pairs`` (its eval split),
    ``generation`` settings, beta and max_length; with ``output_dir`` comparison.json/.md/.png go there.
    """
    recipe = None
    if isinstance(source, tuple):
        (model, tokenizer), name = source, "model"
    elif Path(source).is_dir():
        model, tokenizer, recipe = load_run(Path(source))
        name = str(source)
    else:
        from dpo_hub.hub import download_adapter, load_adapter

        folder = download_adapter(source, revision)  # once: the adapter and the recipe pushed with it
        model, tokenizer = load_adapter(folder, source)
        name = f"{source}@{revision}" if revision else str(source)
        pushed = folder / "recipe.yaml"
        recipe = Recipe.from_yaml(pushed) if pushed.is_file() else None
    label = None
    if pairs is None and recipe is not None:
        try:
            pairs, label = prepare(recipe.data, tokenizer).eval, f"the run's eval split of {recipe.data.dataset}"
        except Exception as err:
            raise DataError(f"{name}: cannot rebuild the run's eval split from {recipe.data.dataset} ({err}); "
                            "pass pairs (--pairs FILE)") from err
    comparison = compare_model(
        model, tokenizer, pairs, prompts, generation or (recipe.generation if recipe else None), judge,
        beta=recipe.dpo.beta if recipe else 0.1, max_length=recipe.dpo.max_length if recipe else None,
        batch_size=batch_size, source=name)
    comparison.settings["pairs"] = label or comparison.settings["pairs"]
    if output_dir is not None:
        write_outputs(comparison, Path(output_dir))
    return comparison


def load_run(folder: Path) -> tuple[Any, Any, Recipe | None]:
    """A finished run folder: (base model with its adapter attached, tokenizer, recipe or None)."""
    from peft import PeftConfig, PeftModel

    from dpo_hub.sources import load_model, load_tokenizer

    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(f"{folder}: no adapter_config.json; not a finished dpo_hub run folder")
    recipe = Recipe.from_yaml(folder / "recipe.yaml") if (folder / "recipe.yaml").exists() else None
    base = recipe.model if recipe else PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    tokenizer = load_tokenizer(str(folder) if (folder / "tokenizer_config.json").exists() else base)
    return PeftModel.from_pretrained(load_model(base), str(folder)), tokenizer, recipe


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


# ---- entry points --------------------------------------------------------------------------------
def compare_after_training(model: Any, tokenizer: Any, eval_pairs: Any, recipe: Recipe,
                           output_dir: str | Path | None = None,
                           generations: list[dict[str, Any]] | None = None) -> Comparison:
    """In-process comparison at the end of a run; writes comparison.json/.md/.png when ``output_dir`` is set."""
    comparison = compare_model(model, tokenizer, eval_pairs, generation=recipe.generation, beta=recipe.dpo.beta,
                               max_length=recipe.dpo.max_length, source=recipe.output_dir, generations=generations)
    if output_dir is not None:
        write_outputs(comparison, Path(output_dir))
    return comparison


def compare_cli(args: Any) -> int:
    """``dpo-hub compare SOURCE [--prompt P ...] [--pairs FILE] [--judge RM] [--output DIR]``."""
    from dpo_hub.hub import HubError

    local = Path(args.source).is_dir()
    output = Path(args.output or (args.source if local else f"comparison-{args.source.rstrip('/').split('/')[-1]}"))
    try:
        comparison = compare(args.source, prompts=args.prompt, pairs=args.pairs, judge=args.judge,
                             output_dir=output, revision=getattr(args, "revision", None))
    except (ValueError, OSError, HubError) as err:  # DataError is a ValueError
        raise SystemExit(f"error: {err}") from None
    print(format_table(comparison))
    print(f"\nwrote {output / 'comparison.json'}, comparison.md, comparison.png")
    return 0
