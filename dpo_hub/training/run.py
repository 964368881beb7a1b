"""Recipe -> trained output folder, on trl's DPOTrainer with a peft LoRA adapter.

Works the same under ``python`` and ``accelerate launch`` (any number of processes): every rank
trains; only the main process writes, and the folder appears only once it is complete. ``train``
reads as the list of its steps; each step is a small function below it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dpo_hub import embedded
from dpo_hub.artifacts import folders as outputs
from dpo_hub.artifacts.plots import loss_curve
from dpo_hub.compare.base_vs_tuned import compare_model, side_by_side
from dpo_hub.compare.report import format_side_by_side, format_table, write_outputs
from dpo_hub.config.losses import describe_losses, untrained_loss
from dpo_hub.data.adapters import PreferenceData, prompt_formatter
from dpo_hub.data.files import absolute_paths
from dpo_hub.data.mixing import datasets_of, prepare_data, resolve_sources
from dpo_hub.errors import OutputError, RunInterrupted
from dpo_hub.recipe import Recipe
from dpo_hub.runtime import (
    BITSANDBYTES_IMPORT_NOTES,
    on_main,
    process_settings_restored,
    setup_logging,
    use_all_cores,
    wants_cpu,
)
from dpo_hub.sources.models import auto_defaults, load_adapter_model, load_model, load_tokenizer, resolve
from dpo_hub.training import checkpoints, deepspeed_cpu, evaluation, plan, topology, trackers
from dpo_hub.training import reference as reference_logps
from dpo_hub.training.levers import Lever, cpu_head, cpu_rows
from dpo_hub.training.levers import model as speedups
from dpo_hub.training.levers.precision import choose_precision
from dpo_hub.training.preflight import check_recipe, check_trainer_configs
from dpo_hub.training.trainer import DpoHubTrainer

log = logging.getLogger("dpo_hub")
LIBRARIES = ("dpo_hub", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub")
EVAL_KEYS = (
    "eval_loss",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
)


@dataclass
class RunState:
    """What ``train``'s steps hand on to each other (instead of attributes stuck onto trl's trainer)."""

    recipe: Recipe
    accelerate: Any  # accelerate's PartialState
    output_dir: Path
    started: float = field(default_factory=time.time)
    notes: list[str] = field(default_factory=list)  # fallbacks to the embedded default or stand-ins
    precision: dict = field(default_factory=dict)  # {"resolved": fp32|bf16|fp16, "why": ...}
    kept_precision: dict | None = None  # a resume: what the first start resolved (checkpoints.PRECISION_FILE)
    trainer: Any = None
    plan: plan.Plan | None = None
    staged: bool = False  # this run created its staging folder
    totals: checkpoints.RunTotals | None = None
    eval_scores: Any = None  # the eval split's scoring pass after training, shared with the comparison
    eval_after_from: str | None = None  # how the eval after training was obtained (evaluation.FROM_*)
    peak_memory: tuple[list[float], str] | None = None  # per rank, gathered once training has finished

    @property
    def saves(self) -> Path:
        return checkpoints.folder_for(self.output_dir)

    @property
    def stage(self) -> Path:
        return outputs.staging_dir(self.output_dir)


def train(recipe: Recipe, output_dir: str | Path | None = None) -> Path:
    """Run ``recipe`` (into ``output_dir`` if given, else ``recipe.output_dir``); return the finished folder.

    Checkpoints go to ``OUTPUT_DIR.checkpoints/`` and a rerun of the same recipe resumes from the newest
    complete one (``recipe.resume``); they are removed once the run has finished.
    """
    with process_settings_restored():
        return _train(recipe, output_dir)


def _train(recipe: Recipe, output_dir: str | Path | None) -> Path:
    from accelerate import PartialState

    if output_dir is not None:
        recipe = recipe.replace(output_dir=str(output_dir))
    accelerate = PartialState(cpu=wants_cpu())
    setup_logging(accelerate.is_main_process)
    run = RunState(recipe, accelerate, Path(recipe.output_dir).expanduser().resolve())
    outputs.check_writable(run.output_dir, recipe.overwrite_output_dir)
    run.recipe, run.notes = on_main(accelerate, lambda: resolve_recipe(recipe))
    for note in check_recipe(run.recipe):  # what needs the model's config, before any weights or data load
        log.info("preflight: %s", note)
    check_trainer_configs(run.recipe, accelerate.num_processes, accelerate.device.type == "cpu")
    _announce(run)
    fingerprint = run.recipe.fingerprint()
    resume_from = on_main(accelerate, lambda: checkpoints.check(run.saves, fingerprint, run.recipe.resume))
    with accelerate.main_process_first():
        tokenizer = load_tokenizer(run.recipe.model)
    try:  # nothing is on disk yet; from here on, a failure before the first checkpoint removes what it made
        data, digest = _prepare_once(run, tokenizer, accelerate, resume_from)
        log.info(
            "data: %d train / %d eval pairs (%d dropped)",
            len(data.train),
            len(data.eval or []),
            sum(data.dropped.values()),
        )
        run.kept_precision = checkpoints.load_precision(run.saves) if resume_from else None
        run.trainer = build_trainer(run.recipe, tokenizer, data, run.saves, accelerate, run)
        on_main(accelerate, lambda: checkpoints.prepare(run.saves, fingerprint, run.recipe.resume, digest))
        on_main(accelerate, lambda: checkpoints.save_precision(run.saves, run.precision))
        accelerate.wait_for_everyone()
        before, train_result, after = _fit(run, data, resume_from)
    except BaseException:
        if accelerate.is_main_process:
            _undo_failed_start(run)
        raise
    run.trainer.save_model(str(run.stage))  # collective under FSDP/DeepSpeed; writes on the main process only
    run.peak_memory = topology.peak_memory_per_rank(accelerate)  # collective: every rank's peak, to all
    if accelerate.is_main_process:
        _finish(run, tokenizer, data, train_result, before, after)
    accelerate.wait_for_everyone()
    return run.output_dir


def _finish(
    run: RunState, tokenizer: Any, data: PreferenceData, train_result: Any, before: dict, after: dict
) -> None:
    """On the main process: compare base and tuned, write the run files, move the folder into place."""
    try:
        trackers.finish_logs(run.trainer, run.saves / "runs", run.stage / "runs")  # TensorBoard's events join
        trackers.finish_trackio(run.trainer, run.saves / "trackio", run.stage / "trackio")
        model = _model_for_generation(run.trainer, run.recipe, run.stage)
        with run.trainer.accelerator.autocast():  # the precision the run trained and evaluated in
            generations, comparison = _compare(model, tokenizer, run, data)
        metrics = _metrics(run, data, train_result, before, after, generations, comparison)
        _write_run_files(run.stage, run.recipe, metrics, generations)
        outputs.finalize(run.stage, run.output_dir)
    except Exception as err:
        raise OutputError(
            f"training finished but writing {run.output_dir} failed ({type(err).__name__}: {err}). The "
            f"trained adapter is in {run.stage}, and {run.saves} holds a checkpoint of the last step: fix "
            "the cause and rerun the same command, which resumes there and only evaluates and writes."
        ) from err
    checkpoints.discard(run.saves)  # the run is complete: nothing left to resume
    summary = _eval_summary(before, after, run.eval_after_from)
    log.info("saved %s in %.0f s%s", run.output_dir, time.time() - run.started, summary)


def resolve_recipe(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """Replace ``auto`` sources by what will really be used; return the notes on any fallback."""
    default_model, default_dataset = auto_defaults(recipe.name)
    model, model_note = resolve(recipe.model.name, default_model, "model")
    data, data_notes = resolve_sources(recipe.data, default_dataset)
    data = absolute_paths(data)  # recipe.yaml repeats the run from any folder
    notes = [n for n in (model_note, *data_notes) if n]
    return recipe.replace(model=dataclasses.replace(recipe.model, name=model), data=data), notes


def build_trainer(
    recipe: Recipe,
    tokenizer: Any,
    data: PreferenceData,
    checkpoints: Path,
    state: Any = None,
    run: RunState | None = None,
) -> DpoHubTrainer:
    """The trainer of a resolved recipe: base model + LoRA, reference = the base with the adapter off, and the
    levers this hardware gets (``trainer.levers``)."""
    from accelerate import PartialState
    from transformers import set_seed

    state = state or PartialState(cpu=wants_cpu())
    use_cpu = state.device.type == "cpu"
    if use_cpu and deepspeed_cpu.wanted():
        deepspeed_cpu.prepare_environment()  # before the DPOConfig's DeepSpeed plugin imports deepspeed
    args = recipe.dpo.to_dpo_config(  # before the model loads: ZeRO-3 init hooks into from_pretrained
        str(checkpoints),
        num_processes=state.num_processes,
        use_cpu=use_cpu,
        eval_strategy=recipe.dpo.eval_strategy if data.eval is not None else "no",
        ddp_find_unused_parameters=False,
    )
    with state.main_process_first():
        model = load_model(recipe.model)
    kept = run.kept_precision if run is not None else None
    if kept and kept.get("setting") == recipe.dpo.precision:  # a resume continues in its first precision
        precision, why = kept["resolved"], f"as the run's first start: {kept['why']}"
        probe = kept.get("probe")
    else:
        precision, why, probe = on_main(state, lambda: choose_precision(recipe.dpo.precision, model, use_cpu))
    if args.bf16 != (precision == "bf16"):  # the probe overruled the hardware's answer: rebuilt, re-checked
        args = dataclasses.replace(args, bf16=precision == "bf16")
    log.info("precision %s: %s (dpo.precision=%s)", precision, why, recipe.dpo.precision)
    if run is not None:
        run.precision = {"setting": recipe.dpo.precision, "resolved": precision, "why": why}
        if probe is not None:
            run.precision["probe"] = probe
    levers = _model_levers(recipe, model, args, state)
    if recipe.model.quantization:
        speedups.keep_4bit_layout(model)
        layers = sum(1 for m in model.modules() if type(m).__module__.startswith("bitsandbytes"))
        log.info(
            "model.quantization %s: %d bitsandbytes layer(s); the model's weights take %.1f MB",
            recipe.model.quantization,
            layers,
            model.get_memory_footprint() / 2**20,
        )
        for note in BITSANDBYTES_IMPORT_NOTES:  # the Hub kernel it asked for as it was imported (runtime.py)
            log.info("model.quantization: bitsandbytes said on import: %s", note)
    set_seed(recipe.dpo.seed)  # LoRA init happens inside DPOTrainer, before Trainer seeds
    trackers.place_trackio(args.report_to, checkpoints / "trackio")  # before the trainer imports trackio
    trainer = DpoHubTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=recipe.lora.to_peft_config(model),
    )
    trackers.place_logs(trainer, checkpoints / "runs")
    trainer.add_levers(levers)
    _trainer_levers(recipe, trainer, args, state)
    for name, lever in trainer.levers.items():
        log.info("lever %s: %s (%s)", name, "on" if lever.active else "off", lever.why)
    log.info(
        "training: effective batch %d (per device %d x %d process(es) x accumulation %d)",
        effective_batch(trainer),
        recipe.dpo.per_device_train_batch_size,
        state.num_processes,
        args.gradient_accumulation_steps,
    )
    return trainer


def _model_levers(recipe: Recipe, model: Any, args: Any, state: Any) -> dict[str, Lever]:
    """Checkpointing, base-model dropout and fused activations, decided on the model before peft wraps it."""
    on, why = speedups.want_checkpointing(recipe.dpo.gradient_checkpointing, model, args, state.device)
    args.gradient_checkpointing = on
    levers = {"gradient_checkpointing": Lever(on, why)}
    if recipe.dpo.base_model_dropout:
        levers["base_dropout_off"] = Lever(
            False, "dpo.base_model_dropout: true keeps the base model's dropout"
        )
    else:
        zeroed = speedups.disable_base_dropout(model)
        levers["base_dropout_off"] = Lever(
            zeroed > 0,
            f"{zeroed} dropout(s) of the frozen base set to 0 (deterministic reference, fused attention)"
            if zeroed
            else "the base model has no dropout",
        )
    fused = speedups.fuse_activations(model)
    levers["fused_gelu"] = Lever(
        fused > 0,
        f"{fused} GPT-2 gelu_new swapped for torch's fused tanh GELU"
        if fused
        else "no gelu_new activation in this model",
    )
    return levers


def _trainer_levers(recipe: Recipe, trainer: DpoHubTrainer, args: Any, state: Any) -> None:
    """The reference cache, saved activations and the CPU levers on trl's LM head and the backbone's rows."""
    use_cpu = state.device.type == "cpu"
    compact, why = speedups.want_compact_activations(recipe.dpo.saved_activations, args)
    if compact:
        trainer.keep_activations_in_bf16(speedups.bf16_hooks(trainer.model))
    trainer.add_levers({"bf16_saved_activations": Lever(compact, why)})
    head, trl_globals = cpu_head.head_levers(use_cpu)
    trainer.add_levers(head, trl_globals=trl_globals)
    if use_cpu:
        rows, wrapper = cpu_rows.trim_padding(trainer.model)
    else:
        rows, wrapper = Lever(False, "CPU only: accelerators run padded rows in one batched kernel"), None
    trainer.add_levers({"trim_padding": rows}, attributes=[wrapper] if wrapper else [])
    if not recipe.dpo.reference_cache:
        trainer.add_levers({"reference_cache": Lever(False, "dpo.reference_cache: false")})
    elif recipe.dpo.extra.get("precompute_ref_log_probs"):
        trainer.add_levers(
            {"reference_cache": Lever(False, "trl's own precompute_ref_log_probs was asked for")}
        )
    elif trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        trainer.add_levers(
            {
                "reference_cache": Lever(
                    False, "sharded weights (FSDP/DeepSpeed): trl computes the reference at every step"
                )
            }
        )
    else:  # after the levers: cached values are computed the way training computes them
        trainer.use_reference_cache(reference_logps.open_cache(trainer, state))
    _bf16_base_weights(recipe, trainer, args, use_cpu)  # after the cache's key: fp32 and bf16 share it
    if trainer.reference_cache is not None:
        with trainer.levers_on():
            reference_logps.prefill_when_all_are_used(trainer.reference_cache, trainer, state)


def _bf16_base_weights(recipe: Recipe, trainer: DpoHubTrainer, args: Any, use_cpu: bool) -> None:
    sharded = bool(trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)
    on, why = speedups.want_bf16_base_weights(
        recipe.dpo.bf16_base_weights, args, use_cpu, bool(recipe.model.quantization), sharded
    )
    if on:
        cast = speedups.store_frozen_weights_in_bf16(trainer.model)
        trainer.weights_need_autocast = cast > 0
        on, why = cast > 0, f"{cast / 1e6:.1f}M frozen weights in bf16: {why}" if cast else "none in fp32"
    trainer.add_levers({"bf16_base_weights": Lever(on, why)})


def effective_batch(trainer: Any) -> int:
    args = trainer.args
    return (
        args.per_device_train_batch_size
        * trainer.accelerator.num_processes
        * args.gradient_accumulation_steps
    )


def _announce(run: RunState) -> None:
    recipe, notes, state = run.recipe, run.notes, run.accelerate
    if notes and embedded.EMBEDDED in (recipe.model.name, recipe.data.dataset):
        log.warning(
            "=" * 78 + "\nEMBEDDED DEFAULT: %s.\nRunning on the embedded default instead: %s.\n" + "=" * 78,
            "; ".join(notes),
            _describe_embedded(recipe),
        )
    elif notes:  # a real stand-in fetched with pip (e.g. SmolLM2's GGUF, TruthfulQA from bigbench)
        log.warning("=" * 78 + "\nSTAND-IN: %s.\n" + "=" * 78, ";\n".join(notes))
    threads = use_all_cores(recipe.threads, state)
    print(
        f"[dpo_hub] rank {state.process_index} of world size {state.num_processes} ready "
        f"({state.distributed_type.value}, {state.backend or 'no backend'}, {state.device})",
        flush=True,
    )
    log.info(
        "recipe %s (fingerprint %s): model %s, data %s:%s; %d process(es), %d CPU thread(s) each",
        recipe.name,
        recipe.fingerprint(),
        recipe.model,
        recipe.data.kind,
        recipe.data.dataset,
        state.num_processes,
        threads,
    )


def _fit(run: RunState, data: PreferenceData, resume_from: Path | None) -> tuple[dict, Any, dict]:
    """Eval before (kept from the first start when resuming), train, eval after; no eval split: empty
    dicts."""
    trainer, saves = run.trainer, run.saves
    run.totals = checkpoints.RunTotals(trainer, resume_from)
    callback = checkpoints.Checkpointing(run.totals)
    trainer.add_callback(callback)
    callback.install_signal_handler()
    evaluate = (
        data.eval is not None and trainer.args.eval_strategy != "no"
    )  # "no": only the comparison scores it
    before = (checkpoints.load_eval_before(saves) if resume_from else None) or {}
    if not before and evaluate:
        before = _untrained_eval(trainer) or _pick(trainer.evaluate())
        if trainer.is_world_process_zero():
            checkpoints.save_eval_before(saves, before)
    log.info(
        "eval before training: %s",
        before or ("no eval split" if data.eval is None else "dpo.eval_strategy no"),
    )
    if resume_from:
        log.info("resuming from %s (step %s)", resume_from, resume_from.name.rsplit("-", 1)[-1])
    sharded = (
        trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    )  # weights are placed by train(): no warm-up
    run.plan = plan.make_plan(trainer, warm_up=not sharded)
    for line in plan.describe(run.plan, trainer.args.use_cpu):
        log.info(line)
    trainer.add_callback(plan.Progress())
    if evaluate and evaluation.why_trl_evaluates(trainer) is None:  # the eval after training replaces it
        trainer.add_callback(evaluation.NoEvalAtLastStep())
    if resume_from and checkpoints.is_final(resume_from):
        result = checkpoints.restore_final(trainer, resume_from)
    else:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if callback.interrupted:
        raise RunInterrupted(
            f"interrupted at step {callback.stopped_at}: a checkpoint is saved in {saves}. "
            "Run the same command again to resume from it."
        )
    after = {}
    if evaluate:  # one process, sigmoid loss: from the comparison's scoring pass, not a second pass
        metrics, run.eval_scores, run.eval_after_from = evaluation.eval_after_training(trainer)
        after = _pick(metrics)
    log.info(
        "eval after training: %s", after or ("no eval split" if data.eval is None else "dpo.eval_strategy no")
    )
    return before, result, after


def _untrained_eval(trainer: Any) -> dict | None:
    """The eval before training without a pass, where the policy provably equals the reference: a fresh LoRA
    adapter (every ``lora_B`` zero, no DoRA) under the sigmoid loss alone. Every log-ratio is then exactly 0:
    loss log 2, rewards and margins 0, accuracy 0 (trl counts a tie as a miss). Logged at step 0 as trl's
    evaluation would be. ``None`` otherwise, and trl evaluates."""
    args = trainer.args
    config = getattr(trainer.model, "peft_config", {}).get("default")
    if config is None or getattr(config, "use_dora", False) or list(args.loss_type) != ["sigmoid"]:
        return None
    if args.loss_weights not in (None, [1.0]):
        return None
    adapters = [
        p for name, p in trainer.model.named_parameters() if "lora_B" in name or "lora_embedding_B" in name
    ]
    if not adapters or any(bool(p.detach().any()) for p in adapters):
        return None
    before = {key: 0.0 for key in EVAL_KEYS}
    before["eval_loss"] = round(untrained_loss("sigmoid", args.beta), 6)
    trainer.log(dict(before))
    return before


def _compare(model: Any, tokenizer: Any, run: RunState, data: PreferenceData) -> tuple[list, Any]:
    """Base vs tuned answers, and (with an eval split) the comparison files in the staging folder: the eval
    split as trl's eval sees it, in the run's precision; scored once with the eval after training where that
    was derived from this pass (``training.evaluation``)."""
    recipe, stage = run.recipe, run.stage
    prompt_text = prompt_formatter(recipe.data, tokenizer)  # generation prompts formatted as training's
    generations = side_by_side(model, tokenizer, recipe.generation, prompt_text)
    print("\n" + format_side_by_side(generations), flush=True)
    if data.eval is None:
        return generations, None
    scores = run.eval_scores
    if scores is None:
        log.info("comparing base and tuned on the %d eval pairs", len(data.eval))
        scores = evaluation.score_eval_split(run.trainer, model)
    else:
        log.info(
            "comparing base and tuned on the %d eval pairs: the eval after training's pass", len(data.eval)
        )
    comparison = compare_model(
        model,
        tokenizer,
        generation=recipe.generation,
        beta=recipe.dpo.beta,
        max_length=recipe.dpo.max_length,
        source=recipe.output_dir,
        generations=generations,
        prompt_text=prompt_text,
        scores=scores,
    )
    comparison.settings["pairs"] = f"the run's eval split of {recipe.data.dataset}"
    comparison.settings["eval_after_from"] = run.eval_after_from
    comparison.settings["headline"] = _headline(run.eval_after_from)
    write_outputs(comparison, stage)
    print(format_table(comparison), flush=True)
    return generations, comparison


def _metrics(
    run: RunState,
    data: PreferenceData,
    train_result: Any,
    before: dict,
    after: dict,
    generations: list[dict],
    comparison: Any,
) -> dict:
    recipe, trainer, notes = run.recipe, run.trainer, run.notes
    using_embedded = embedded.EMBEDDED in (recipe.model.name, *datasets_of(recipe.data))
    return {
        "recipe": recipe.name,
        "fingerprint": recipe.fingerprint(),
        "model": recipe.model.name,
        "embedded": {"used": True, "why": notes, "what": _describe_embedded(recipe)}
        if using_embedded
        else None,
        "stand_ins": notes if notes and not using_embedded else None,
        "eval_before": before,
        "eval_after": after,
        "eval_after_from": run.eval_after_from,
        "train": {
            **run.totals.whole_run(train_result.metrics, trainer.state.global_step),  # over every start
            "global_step": trainer.state.global_step,
            "tokens_seen": max(_tokens_seen(trainer.state.log_history), run.totals.tokens_seen()),
            **_reference_metrics(trainer.reference_cache),
        },
        "plan": run.plan.to_dict(),
        "precision": run.precision,
        "levers": {name: lever.to_dict() for name, lever in sorted(trainer.levers.items())},
        "data": {
            "train_pairs": len(data.train),
            "eval_pairs": len(data.eval or []),
            "dropped": dict(data.dropped),
            "held_out_by": data.split_by,
            **({"sources": data.sources} if data.sources else {}),
        },
        "processes": run.accelerate.num_processes,
        "distributed": topology.distributed(
            trainer.accelerator.state, _base_sharded(trainer), run.peak_memory
        ).to_dict(),
        "quantization": recipe.model.quantization,
        "effective_batch_size": effective_batch(trainer),
        "per_device_train_batch_size": recipe.dpo.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "comparison": comparison.preference if comparison else None,
        "generations": generations,  # trainer.train() resets the state: keep the eval before training
        "log_history": ([{"step": 0, **before}] if before else []) + trainer.state.log_history,
        "versions": {"python": platform.python_version(), **{lib: version(lib) for lib in LIBRARIES}},
        "wall_time_s": round(time.time() - run.started, 1),
    }


def _reference_metrics(cache: Any) -> dict:
    if cache is None:  # trl computed the reference at every step
        return {}
    return {
        "reference_s": round(cache.seconds, 2),
        "reference_pairs_computed": cache.computed,
        "reference_pairs_reused": cache.reused,
    }


def _headline(eval_after_from: str | None) -> str:
    if eval_after_from is None:
        return "the headline: no trl eval after training"
    if eval_after_from == evaluation.FROM_PASS:
        return evaluation.ONE_PASS
    return (
        f"the headline; trl's eval after training ran its own pass in the same precision: {eval_after_from}"
    )


def _eval_summary(before: dict, after: dict, eval_after_from: str | None) -> str:
    if not after:
        return " (no trl eval: see the comparison)"
    how = (
        "one pass: trl eval == comparison table"
        if eval_after_from == evaluation.FROM_PASS
        else "trl's own eval pass; the comparison table is the headline"
    )
    return (
        f": eval loss {before['eval_loss']:.4f} -> {after['eval_loss']:.4f}, "
        f"reward accuracy {after.get('eval_rewards/accuracies', float('nan')):.3f} ({how})"
    )


def _prepare_once(
    run: RunState, tokenizer: Any, state: Any, resume_from: Path | None
) -> tuple[PreferenceData, dict | None]:
    """The main process prepares the splits in memory, checks them against the checkpoints it resumes, and
    only then creates the staging folder and saves them there; every rank then reads the same files.
    Returns the data and (main process) the digest of its pairs."""
    import datasets

    folder = run.stage / "prepared"

    def prepare() -> str:
        recipe = run.recipe
        data = prepare_data(recipe.data, tokenizer, max_length=recipe.dpo.max_length)
        digest = checkpoints.data_digest(data)
        checkpoints.check_data(resume_from, digest)  # data edited since the crash: refuse, change nothing
        outputs.fresh_staging(run.output_dir)
        run.staged = True
        for name, split in (("train", data.train), ("eval", data.eval)):
            if split is not None:
                split.save_to_disk(str(folder / name))
        outputs.write_json(
            folder / "info.json",
            {
                "source": data.source,
                "dropped": dict(data.dropped),
                "split_by": data.split_by,
                "sources": data.sources,
            },
        )
        return digest

    digest = on_main(state, prepare)  # a data error reaches every rank: one line, no peer traceback
    digest = digest if state.is_main_process else None
    info = json.loads((folder / "info.json").read_text())
    splits = {
        n: datasets.load_from_disk(str(folder / n)) if (folder / n).exists() else None
        for n in ("train", "eval")
    }
    data = PreferenceData(
        splits["train"],
        splits["eval"],
        info["source"],
        Counter(info["dropped"]),
        split_by=info["split_by"],
        sources=info["sources"],
    )
    return data, digest


def _undo_failed_start(run: RunState) -> None:
    """A run that failed before writing any checkpoint removes what it created: its staging folder and the
    checkpoints folder's lock (only dpo_hub's own files); a rerun then starts clean."""
    if checkpoints.has_checkpoints(run.saves):
        return  # a checkpoint to resume from: keep everything (the rerun resumes there)
    if run.staged:
        outputs.remove_staging(run.stage)
    checkpoints.discard(run.saves)


def _base_sharded(trainer: Any) -> bool:
    """Whether the frozen base weights were split between the processes (FSDP, DeepSpeed ZeRO-3)."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return bool(trainer.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3))


def _model_for_generation(trainer: Any, recipe: Recipe, stage: Path) -> Any:
    """The tuned model on the main process; sharded runs (FSDP, ZeRO-3) reload base + saved adapter."""
    if _base_sharded(trainer):
        return load_adapter_model(stage, recipe.model)
    return trainer.accelerator.unwrap_model(trainer.model)


def _write_run_files(stage: Path, recipe: Recipe, metrics: dict, generations: list[dict]) -> None:
    for leftover in ("training_args.bin", "README.md"):  # pickle args and peft's stub card are not published
        (stage / leftover).unlink(missing_ok=True)
    shutil.rmtree(stage / "prepared", ignore_errors=True)
    header = (
        f"Resolved recipe of a finished run (fingerprint {recipe.fingerprint()}). Repeat it with:\n"
        f"  accelerate launch -m dpo_hub train --config {recipe.output_dir}/recipe.yaml --output_dir NEW_DIR"
    )
    (stage / "recipe.yaml").write_text(recipe.to_yaml(header), encoding="utf-8")
    (stage / "generations.md").write_text(format_side_by_side(generations) + "\n", encoding="utf-8")
    dpo, weights = recipe.dpo, recipe.dpo.extra.get("loss_weights")
    loss = describe_losses(dpo.loss_type, weights)
    loss_curve(
        metrics["log_history"],
        stage / "loss.png",
        f"DPO loss ({loss}): {recipe.name}",
        untrained=untrained_loss(dpo.loss_type, dpo.beta, dpo.label_smoothing, weights=weights),
        untrained_label=f"{loss} at zero margin",
    )
    outputs.write_json(stage / outputs.COMPLETE_MARKER, metrics)


def _pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 6) for k in EVAL_KEYS if k in metrics}


def _tokens_seen(log_history: list[dict]) -> int:
    return int(max((e.get("num_tokens", 0) for e in log_history), default=0))


def _describe_embedded(recipe: Recipe) -> str:
    parts = []
    if recipe.model.name == embedded.EMBEDDED:
        parts.append(
            f"model {embedded.EMBEDDED_MODEL_ID} (GPT-2 architecture {embedded.MODEL_SHAPE}, random seeded "
            "weights, NOT pretrained GPT-2: no weights can be downloaded) with GPT-2's real tokenizer"
        )
    if embedded.EMBEDDED in datasets_of(recipe.data):
        parts.append("data: the bundled 400-pair UltraFeedback-schema sample")
    return "; ".join(parts)
