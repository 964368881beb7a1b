"""Recipe -> trained output folder, on trl's DPOTrainer with a peft LoRA adapter.

Works the same under ``python`` and ``accelerate launch`` (any number of processes): every rank
trains; only the main process writes, and the folder appears only once it is complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dpo_hub import embedded, outputs
from dpo_hub.compare import format_side_by_side, side_by_side
from dpo_hub.data import prepare
from dpo_hub.recipe import Recipe
from dpo_hub.sources import DEFAULT_DATASET, DEFAULT_MODEL, load_model, load_tokenizer, resolve

log = logging.getLogger("dpo_hub")
LIBRARIES = ("dpo_hub", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub")
EVAL_KEYS = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected")


def setup_logging(is_main: bool) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[dpo_hub] %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.ERROR)


def resolve_recipe(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """Replace ``auto`` sources by what will really be used; return the notes on any fallback."""
    model, model_note = resolve(recipe.model, DEFAULT_MODEL, "model")
    dataset, data_note = resolve(recipe.data.dataset, DEFAULT_DATASET, "dataset")
    notes = [n for n in (model_note, data_note) if n]
    return recipe.replace(model=model, data=dataclasses.replace(recipe.data, dataset=dataset)), notes


def use_all_cores(threads: int | None, state: Any) -> int:
    """CPU threads for this process: all cores split between local processes (accelerate sets 1)."""
    import torch

    if state.device.type != "cpu":
        return torch.get_num_threads()
    n = threads or int(os.environ.get("DPO_HUB_NUM_THREADS", 0)) or max(
        1, len(os.sched_getaffinity(0)) // max(1, state.num_processes // max(1, _num_machines())))
    torch.set_num_threads(n)
    return n


def _num_machines() -> int:
    return int(os.environ.get("ACCELERATE_NUM_MACHINES", os.environ.get("NNODES", 1)) or 1)


def train(recipe: Recipe) -> Path:
    """Run ``recipe`` and return its finished output folder."""
    from accelerate import PartialState

    started = time.time()
    state = PartialState()
    setup_logging(state.is_main_process)
    output_dir = Path(recipe.output_dir).resolve()
    outputs.check_writable(output_dir, recipe.overwrite_output_dir)
    recipe, notes = resolve_recipe(recipe)
    using_embedded = embedded.EMBEDDED in (recipe.model, recipe.data.dataset)
    if notes:
        log.warning("=" * 78 + "\nEMBEDDED DEFAULT: %s.\nRunning on the embedded default instead: %s.\n" + "=" * 78,
                    "; ".join(notes), _describe_embedded(recipe))
    threads = use_all_cores(recipe.threads, state)
    log.info("recipe %s (fingerprint %s): model %s, data %s:%s; %d process(es), %d CPU thread(s) each",
             recipe.name, recipe.fingerprint(), recipe.model, recipe.data.kind, recipe.data.dataset,
             state.num_processes, threads)

    with state.main_process_first():
        tokenizer = load_tokenizer(recipe.model)
        data = prepare(recipe.data, tokenizer)
        model = load_model(recipe.model)
    log.info("data: %d train / %d eval pairs (%d dropped)", len(data.train), len(data.eval or []),
             sum(data.dropped.values()))

    stage = outputs.staging_dir(output_dir)
    if state.is_main_process:
        outputs.fresh_staging(output_dir)
    state.wait_for_everyone()
    trainer = _trainer(recipe, model, tokenizer, data, stage, state)
    effective_batch = recipe.dpo.per_device_train_batch_size * state.num_processes * trainer.args.gradient_accumulation_steps
    log.info("training: effective batch %d (per device %d x %d process(es) x accumulation %d)", effective_batch,
             recipe.dpo.per_device_train_batch_size, state.num_processes, trainer.args.gradient_accumulation_steps)
    before = _pick(trainer.evaluate()) if data.eval is not None else {}
    log.info("eval before training: %s", before)
    train_result = trainer.train()
    after = _pick(trainer.evaluate()) if data.eval is not None else {}
    log.info("eval after training: %s", after)

    trainer.save_model(str(stage))  # collective under FSDP/DeepSpeed; writes on the main process only
    if state.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        generations = side_by_side(model, tokenizer, recipe.generation)
        print("\n" + format_side_by_side(generations), flush=True)
        metrics = {
            "recipe": recipe.name, "fingerprint": recipe.fingerprint(), "model": recipe.model,
            "embedded": {"used": using_embedded, "why": notes, "what": _describe_embedded(recipe)} if using_embedded else None,
            "eval_before": before, "eval_after": after,
            "train": {**train_result.metrics, "tokens_seen": _tokens_seen(trainer.state.log_history)},
            "data": {"train_pairs": len(data.train), "eval_pairs": len(data.eval or []), "dropped": dict(data.dropped)},
            "processes": state.num_processes, "effective_batch_size": effective_batch,
            "generations": generations, "log_history": trainer.state.log_history,
            "versions": {"python": platform.python_version(), **{lib: version(lib) for lib in LIBRARIES}},
            "wall_time_s": round(time.time() - started, 1),
        }
        _write_run_files(stage, recipe, metrics, generations)
        outputs.finalize(stage, output_dir)
        log.info("saved %s in %.0f s: eval loss %.4f -> %.4f, reward accuracy %.2f", output_dir, time.time() - started,
                 before.get("eval_loss", float("nan")), after.get("eval_loss", float("nan")),
                 after.get("eval_rewards/accuracies", float("nan")))
    state.wait_for_everyone()
    return output_dir


def _trainer(recipe: Recipe, model: Any, tokenizer: Any, data: Any, stage: Path, state: Any):
    from trl import DPOTrainer

    args = recipe.dpo.to_dpo_config(
        str(stage / "checkpoints"), num_processes=state.num_processes, use_cpu=state.device.type == "cpu",
        eval_strategy=recipe.dpo.eval_strategy if data.eval is not None else "no",
    )
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data.train, eval_dataset=data.eval,
                      processing_class=tokenizer, peft_config=recipe.lora.to_peft_config(model))


def _write_run_files(stage: Path, recipe: Recipe, metrics: dict, generations: list[dict]) -> None:
    for leftover in ("training_args.bin", "README.md"):  # pickle args and peft's stub card are not published
        (stage / leftover).unlink(missing_ok=True)
    checkpoints = stage / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    header = f"Resolved recipe of a finished run (fingerprint {recipe.fingerprint()}). Repeat it with:\n" \
             f"  accelerate launch -m dpo_hub train --config {recipe.output_dir}/recipe.yaml --output_dir NEW_DIR"
    (stage / "recipe.yaml").write_text(recipe.to_yaml(header), encoding="utf-8")
    (stage / "generations.md").write_text(format_side_by_side(generations) + "\n", encoding="utf-8")
    outputs.plot_loss(metrics["log_history"], stage / "loss.png", f"DPO loss: {recipe.name}")
    outputs.write_json(stage / outputs.COMPLETE_MARKER, metrics)


def _pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 6) for k in EVAL_KEYS if k in metrics}


def _tokens_seen(log_history: list[dict]) -> int:
    return int(max((e.get("num_tokens", 0) for e in log_history), default=0))


def _describe_embedded(recipe: Recipe) -> str:
    parts = []
    if recipe.model == embedded.EMBEDDED:
        parts.append(f"model {embedded.EMBEDDED_MODEL_ID} (GPT-2 architecture {embedded.MODEL_SHAPE}, random seeded "
                     "weights, NOT pretrained GPT-2: no weights can be downloaded) with GPT-2's real tokenizer")
    if recipe.data.dataset == embedded.EMBEDDED:
        parts.append("data: the bundled 400-pair UltraFeedback-schema sample")
    return "; ".join(parts)
