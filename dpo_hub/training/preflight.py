"""Checks of a recipe against the installed libraries, the model's config and the machine, before anything
loads.

``check_recipe(recipe)`` reads the model's config only (no weights; the layers are built on the meta
device) and creates nothing; it raises ``RecipeError`` naming the key and what to do.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from dpo_hub import embedded
from dpo_hub.artifacts.folders import can_create_in
from dpo_hub.config.losses import trl_loss_types
from dpo_hub.config.model import ModelSpec, as_spec
from dpo_hub.config.trackers import check_installed
from dpo_hub.errors import RecipeError, SourceUnavailableError
from dpo_hub.recipe import Recipe
from dpo_hub.runtime import wants_cpu
from dpo_hub.sources.models import AUTO, auto_defaults, resolve


def check_recipe(recipe: Recipe) -> list[str]:
    """Refuse what would fail later (loss, tracker, length, LoRA targets, precision, resume, output); return
    notes."""
    notes: list[str] = []
    _check_loss(recipe)
    check_installed(recipe.dpo.extra.get("report_to", []))  # a tracker's package
    _check_paths(recipe)
    notes += _check_precision(recipe.dpo.precision)
    _check_quantization(recipe.model)
    model = recipe.model
    if model.name == AUTO:
        name, why = resolve(AUTO, auto_defaults(recipe.name)[0], "model")
        model = dataclasses.replace(model, name=name)
        notes += [f"model auto checked as {name}" + (f" ({why})" if why else "")]
    config = model_config(model)
    _check_positions(recipe, model.name, config)
    _check_targets(recipe, model.name, config)
    return notes


def model_config(model: str | ModelSpec) -> Any:
    """The ``transformers`` config of ``model`` (Hub id, folder, .gguf or ``embedded``): the config file
    only."""
    spec = as_spec(model)
    if spec.name == embedded.EMBEDDED:
        from transformers import GPT2Config

        return GPT2Config(vocab_size=50257, **embedded.MODEL_SHAPE)
    from transformers import AutoConfig

    where, gguf_file = spec.location()
    extra = {k: v for k, v in (("revision", spec.revision), ("gguf_file", gguf_file)) if v is not None}
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=False, **extra)
    except ImportError as err:
        raise SourceUnavailableError(
            f"model {spec.name!r}: {err}; pip install gguf to read GGUF files"
        ) from None
    except (OSError, ValueError) as err:
        if spec.name == embedded.EMBEDDED_MODEL_ID:
            return model_config(embedded.EMBEDDED)
        raise SourceUnavailableError(
            f"model {spec.name!r}: its config could not be read ({str(err).splitlines()[0]}). Check the name "
            "and your network, or use --model auto (the embedded default when offline) or --model embedded."
        ) from None


def module_names(config: Any) -> set[str]:
    """Every module name of the model ``config`` describes, built on the meta device (no memory, no
    weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as err:
        raise RecipeError(
            f"model: not a causal language model ({str(err).splitlines()[0]}); "
            "use a decoder-only LM such as gpt2"
        ) from None
    return {name for name, _ in model.named_modules() if name}


def _check_quantization(model: ModelSpec) -> None:
    """4/8-bit loading needs bitsandbytes (>= 0.50 on the CPU) and does not shard on the CPU: refuse it
    before any weights load."""
    if model.quantization is None:
        return
    import importlib.util

    sharded = any(
        os.environ.get(name, "").lower() == "true"
        for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )
    if sharded and wants_cpu():
        raise RecipeError(
            f"model.quantization={model.quantization} with FSDP/DeepSpeed does not run on the CPU (4-bit "
            "weights are not sharded there); use accelerate_configs/cpu.yaml or cpu_ddp.yaml, or remove "
            "model.quantization"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RecipeError(
            f"model.quantization={model.quantization} needs the bitsandbytes package; "
            "pip install 'dpo-hub[qlora]', or remove model.quantization"
        )
    if not wants_cpu():
        return
    from importlib.metadata import version

    if tuple(int(x) for x in re.findall(r"\d+", version("bitsandbytes"))[:2]) < (0, 50):
        raise RecipeError(
            f"model.quantization={model.quantization} on the CPU needs bitsandbytes >= 0.50 (installed: "
            f"{version('bitsandbytes')}); pip install -U 'bitsandbytes>=0.50', or remove model.quantization"
        )


def _check_loss(recipe: Recipe) -> None:
    for loss in recipe.dpo.loss_types:
        if loss not in trl_loss_types():
            raise RecipeError(
                f"dpo.loss_type={loss!r} is not a loss the installed trl implements; "
                f"use one of: {', '.join(trl_loss_types())}"
            )


def _check_positions(recipe: Recipe, model: str, config: Any) -> None:
    for attribute in ("n_positions", "max_position_embeddings"):
        positions = getattr(config, attribute, None)
        if isinstance(positions, int) and recipe.dpo.max_length > positions:
            raise RecipeError(
                f"dpo.max_length={recipe.dpo.max_length} exceeds the {positions} positions of model "
                f"{model!r} ({attribute}); use --dpo.max_length {positions} or less"
            )


def _check_targets(recipe: Recipe, model: str, config: Any) -> None:
    targets = recipe.lora.target_modules
    if targets == ("all-linear",):
        return
    names = module_names(config)
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        leaves = {n for n in names if not any(other.startswith(f"{n}.") for other in names)}
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in leaves})
        raise RecipeError(
            f"lora.target_modules: {', '.join(missing)} not in model {model!r}; its module names: "
            f"{', '.join(suffixes)} (or all-linear for every linear layer but the head)"
        )


def _check_precision(precision: str) -> list[str]:
    if precision not in ("bf16", "fp16"):
        return []
    if wants_cpu():
        if precision == "fp16":
            raise RecipeError(
                "dpo.precision=fp16 needs a GPU and this run is on the CPU; "
                "use fp32, or bf16 (slower than fp32 on most CPUs)"
            )
        return ["dpo.precision=bf16 on the CPU: supported by torch, but often slower than fp32"]
    import torch

    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise RecipeError("dpo.precision=bf16: this GPU cannot compute in bf16; use fp16 or fp32 (or auto)")
    return []


def _check_paths(recipe: Recipe) -> None:
    if recipe.resume not in ("auto", "never") and not Path(recipe.resume).is_dir():
        raise RecipeError(
            f"resume={recipe.resume!r}: no such checkpoint folder; use auto, never, or an existing "
            "OUTPUT_DIR.checkpoints/checkpoint-N folder"
        )
    output = Path(recipe.output_dir).expanduser().absolute()
    if output.exists() and not output.is_dir():
        raise RecipeError(
            f"output_dir={recipe.output_dir!r} is a file; name a folder (new or a finished run's)"
        )
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    if not can_create_in(parent):  # a real probe: os.access says yes to root on /proc
        raise RecipeError(
            f"output_dir={recipe.output_dir!r}: {parent} is not a writable folder; choose an "
            "output_dir where you can create files"
        )


def check_trainer_configs(recipe: Recipe, num_processes: int, use_cpu: bool) -> None:
    """Build the run's ``trl.DPOConfig`` and ``peft.LoraConfig`` (nothing is written) and apply the trainer's
    rules on the model's config, so that what trl or peft refuse fails before anything is created, as one
    ``RecipeError`` naming the recipe keys."""
    try:
        recipe.dpo.accumulation_for(num_processes)
    except ValueError as err:
        raise RecipeError(f"{err} (dpo.effective_batch_size, dpo.per_device_train_batch_size)") from None
    checkpoints = Path(recipe.output_dir).expanduser().absolute().parent / "never-written"
    for group, build in (
        ("dpo", lambda: recipe.dpo.to_dpo_config(str(checkpoints), num_processes, use_cpu)),
        ("lora", lambda: recipe.lora.to_peft_config(None)),
    ):
        try:
            build()
        except (ValueError, TypeError, ImportError, NotImplementedError) as err:
            raise RecipeError(_refused(group, err, list(getattr(recipe, group).extra))) from None
    model = recipe.model
    if model.name == AUTO:
        model = dataclasses.replace(model, name=resolve(AUTO, auto_defaults(recipe.name)[0], "model")[0])
    config = model_config(model)
    coefficient = recipe.dpo.extra.get("router_aux_loss_coef")
    if coefficient and not hasattr(config.get_text_config(), "output_router_logits"):
        raise RecipeError(
            f"dpo.router_aux_loss_coef={coefficient}: model {recipe.model.name!r} is not a mixture of "
            "experts (no router logits to weight); remove dpo.router_aux_loss_coef"
        )
    head = _head_name(config)
    if head and any(t == head or head.endswith(f".{t}") for t in recipe.lora.target_modules):
        raise RecipeError(
            f"lora.target_modules: {head} is the model's output head, which trl's DPO loss reads directly "
            f"(an adapter there would never train); remove {head} from lora.target_modules"
        )


def _refused(group: str, err: BaseException, settings: list[str]) -> str:
    """trl's or peft's refusal as one line naming the recipe keys its message mentions."""
    from dpo_hub.config.fields import RESERVED, library_fields

    library = "trl.DPOConfig" if group == "dpo" else "peft.LoraConfig"
    text = " ".join(str(err).split()) or type(err).__name__
    keys = []
    for name in library_fields(group):
        if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text):
            owner = RESERVED[group].get(name, "").split(" ")[0]
            keys.append(owner if owner.startswith("dpo.") else f"{group}.{name}")
    named = (
        ", ".join(dict.fromkeys(keys or [f"{group}.{name}" for name in settings]))
        or f"the {group}.* settings"
    )
    if isinstance(err, ImportError):
        return f"{library} with {named} needs a package that is not installed: {text} (nothing was written)"
    return f"{library} refuses {named}: {text} (change {named} in the recipe; nothing was written)"


def _head_name(config: Any) -> str | None:
    """The module name of the model's output head (``lm_head`` for most), built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError:
        return None
    head = model.get_output_embeddings()
    return next((name for name, module in model.named_modules() if module is head), None)
