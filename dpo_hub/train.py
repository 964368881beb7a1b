"""Recipe -> trained output folder, on trl's DPOTrainer with a peft LoRA adapter.

Works the same under ``python`` and ``accelerate launch`` (any number of processes): every rank
trains; only the main process writes, and the folder appears only once it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

from trl import DPOTrainer

from dpo_hub import embedded, outputs
from dpo_hub.compare import compare_after_training, format_side_by_side, format_table, side_by_side
from dpo_hub.data import PreferenceData, prepare
from dpo_hub.recipe import Recipe
from dpo_hub.runtime import setup_logging, use_all_cores, wants_cpu
from dpo_hub.sources import DEFAULT_DATASET, DEFAULT_MODEL, load_model, load_tokenizer, resolve

log = logging.getLogger("dpo_hub")
LIBRARIES = ("dpo_hub", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub")
EVAL_KEYS = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected")


def resolve_recipe(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """Replace ``auto`` sources by what will really be used; return the notes on any fallback."""
    model, model_note = resolve(recipe.model, DEFAULT_MODEL, "model")
    dataset, data_note = resolve(recipe.data.dataset, DEFAULT_DATASET, "dataset")
    notes = [n for n in (model_note, data_note) if n]
    return recipe.replace(model=model, data=dataclasses.replace(recipe.data, dataset=dataset)), notes


def train(recipe: Recipe) -> Path:
    """Run ``recipe`` and return its finished output folder."""
    from accelerate import PartialState
    from transformers import set_seed

    started = time.time()
    state = PartialState(cpu=wants_cpu())
    setup_logging(state.is_main_process)
    output_dir = Path(recipe.output_dir).resolve()
    outputs.check_writable(output_dir, recipe.overwrite_output_dir)
    resolved = [resolve_recipe(recipe) if state.is_main_process else None]  # one process probes the Hub
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(resolved)  # every rank runs what the main process resolved
    recipe, notes = resolved[0]
    using_embedded = embedded.EMBEDDED in (recipe.model, recipe.data.dataset)
    if notes:
        log.warning("=" * 78 + "\nEMBEDDED DEFAULT: %s.\nRunning on the embedded default instead: %s.\n" + "=" * 78,
                    "; ".join(notes), _describe_embedded(recipe))
    threads = use_all_cores(recipe.threads, state)
    print(f"[dpo_hub] rank {state.process_index} of world size {state.num_processes} ready "
          f"({state.distributed_type.value}, {state.backend or 'no backend'}, {state.device})", flush=True)
    log.info("recipe %s (fingerprint %s): model %s, data %s:%s; %d process(es), %d CPU thread(s) each",
             recipe.name, recipe.fingerprint(), recipe.model, recipe.data.kind, recipe.data.dataset,
             state.num_processes, threads)

    stage = outputs.staging_dir(output_dir)
    if state.is_main_process:
        outputs.fresh_staging(output_dir)
    state.wait_for_everyone()
    with state.main_process_first():
        tokenizer = load_tokenizer(recipe.model)
    data = _prepare_once(recipe, tokenizer, state, stage / "prepared")
    log.info("data: %d train / %d eval pairs (%d dropped)", len(data.train), len(data.eval or []),
             sum(data.dropped.values()))
    args = recipe.dpo.to_dpo_config(  # before the model loads: ZeRO-3 init hooks into from_pretrained
        str(stage / "checkpoints"), num_processes=state.num_processes, use_cpu=state.device.type == "cpu",
        eval_strategy=recipe.dpo.eval_strategy if data.eval is not None else "no", ddp_find_unused_parameters=False,
    )
    with state.main_process_first():
        model = load_model(recipe.model)
    set_seed(recipe.dpo.seed)  # LoRA init happens inside DPOTrainer, before Trainer seeds
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         processing_class=tokenizer, peft_config=recipe.lora.to_peft_config(model))
    effective_batch = recipe.dpo.per_device_train_batch_size * state.num_processes * args.gradient_accumulation_steps
    log.info("training: effective batch %d (per device %d x %d process(es) x accumulation %d)", effective_batch,
             recipe.dpo.per_device_train_batch_size, state.num_processes, args.gradient_accumulation_steps)
    before = _pick(trainer.evaluate()) if data.eval is not None else {}
    log.info("eval before training: %s", before)
    train_result = trainer.train()
    after = _pick(trainer.evaluate()) if data.eval is not None else {}
    log.info("eval after training: %s", after)

    trainer.save_model(str(stage))  # collective under FSDP/DeepSpeed; writes on the main process only
    if state.is_main_process:
        model = _model_for_generation(trainer, recipe, stage)
        generations = side_by_side(model, tokenizer, recipe.generation)
        print("\n" + format_side_by_side(generations), flush=True)
        comparison = None
        if data.eval is not None:
            log.info("comparing base and tuned on the %d eval pairs", len(data.eval))
            comparison = compare_after_training(model, tokenizer, data.eval, recipe, output_dir=stage,
                                                generations=generations)
            print(format_table(comparison), flush=True)
        metrics = {
            "recipe": recipe.name, "fingerprint": recipe.fingerprint(), "model": recipe.model,
            "embedded": {"used": True, "why": notes, "what": _describe_embedded(recipe)} if using_embedded else None,
            "eval_before": before, "eval_after": after,
            "train": {**train_result.metrics, "tokens_seen": _tokens_seen(trainer.state.log_history)},
            "data": {"train_pairs": len(data.train), "eval_pairs": len(data.eval or []), "dropped": dict(data.dropped)},
            "processes": state.num_processes, "effective_batch_size": effective_batch,
            "per_device_train_batch_size": recipe.dpo.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "comparison": comparison.preference if comparison else None,
            "generations": generations,  # trainer.train() resets the state: keep the eval before training
            "log_history": ([{"step": 0, **before}] if before else []) + trainer.state.log_history,
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


def _prepare_once(recipe: Recipe, tokenizer: Any, state: Any, folder: Path) -> PreferenceData:
    """The main process prepares the splits and saves them; every rank then reads the same files."""
    import datasets

    if state.is_main_process:
        data = prepare(recipe.data, tokenizer)
        for name, split in (("train", data.train), ("eval", data.eval)):
            if split is not None:
                split.save_to_disk(str(folder / name))
        outputs.write_json(folder / "info.json", {"source": data.source, "dropped": dict(data.dropped)})
    state.wait_for_everyone()
    info = json.loads((folder / "info.json").read_text())
    splits = {n: datasets.load_from_disk(str(folder / n)) if (folder / n).exists() else None for n in ("train", "eval")}
    return PreferenceData(splits["train"], splits["eval"], info["source"], Counter(info["dropped"]))


def _model_for_generation(trainer: Any, recipe: Recipe, stage: Path) -> Any:
    """The tuned model on the main process; sharded runs (FSDP, ZeRO-3) reload base + saved adapter."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if trainer.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
        from peft import PeftModel

        return PeftModel.from_pretrained(load_model(recipe.model), str(stage))
    return trainer.accelerator.unwrap_model(trainer.model)


def _write_run_files(stage: Path, recipe: Recipe, metrics: dict, generations: list[dict]) -> None:
    for leftover in ("training_args.bin", "README.md"):  # pickle args and peft's stub card are not published
        (stage / leftover).unlink(missing_ok=True)
    shutil.rmtree(stage / "prepared", ignore_errors=True)
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
