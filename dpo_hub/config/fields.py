"""Pass-through settings: any ``trl.DPOConfig`` field under ``dpo:``, any ``peft.LoraConfig`` field under
``lora:``.

Names, types and help text are read from the INSTALLED libraries' dataclasses, so a newer trl or peft brings
its fields without a dpo_hub release. Fields dpo_hub decides itself are refused, naming the key to use.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dpo_hub.config.values import coerce, is_config, options, origin
from dpo_hub.errors import RecipeError

LIBRARY = {"dpo": ("trl", "DPOConfig"), "lora": ("peft", "LoraConfig")}
DOCS = {
    "dpo": "https://huggingface.co/docs/trl/dpo_trainer#trl.DPOConfig",
    "lora": "https://huggingface.co/docs/peft/package_reference/lora#peft.LoraConfig",
}
_PUSH = "push_to_hub (dpo_hub pushes the finished adapter and its card)"
_MODEL = "model (dpo_hub loads the model and passes it to the trainer)"
RESERVED = {  # field -> the dpo_hub key (or reason) that sets it instead
    "dpo": {
        "output_dir": "output_dir (checkpoints go to OUTPUT_DIR.checkpoints)",
        "bf16": "dpo.precision",
        "fp16": "dpo.precision",
        "bf16_full_eval": "dpo.precision",
        "fp16_full_eval": "dpo.precision",
        "use_cpu": "the accelerate config (dpo_hub trains on the CPU when no GPU is visible)",
        "resume_from_checkpoint": "resume",
        "push_to_hub": _PUSH,
        "hub_model_id": _PUSH,
        "hub_strategy": _PUSH,
        "hub_private_repo": _PUSH,
        "hub_always_push": _PUSH,
        "hub_revision": _PUSH,
        "hub_token": "`hf auth login` or HF_TOKEN (tokens never go into recipe files)",
        "ddp_find_unused_parameters": "nothing: dpo_hub sets it to false (the reference is the base, adapter "
        "off)",
        "model_init_kwargs": _MODEL,
        "ref_model_init_kwargs": _MODEL,
    },
    "lora": {
        "task_type": "nothing: dpo_hub trains causal LMs (CAUSAL_LM)",
        "peft_type": "nothing: this is LoRA",
        "base_model_name_or_path": "model",
        "revision": "model",
        "inference_mode": "nothing: adapters train",
        "auto_mapping": "nothing: peft sets it",
        "peft_version": "nothing: peft records it",
    },
}


class Settings(Mapping[str, Any]):
    """A read-only mapping of pass-through settings (field name -> value) that pickles and compares by
    value."""

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Settings({self._items!r})"

    def __hash__(self) -> int:
        return hash(json.dumps(self._items, sort_keys=True, default=str))


@functools.cache
def library_fields(group: str) -> dict[str, tuple[Any, str]]:
    """``{field: (type hint, help text)}`` of the installed ``DPOConfig`` (``dpo``) or ``LoraConfig``
    (``lora``)."""
    import importlib

    module, name = LIBRARY[group]
    cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints.get(f.name, Any), " ".join(str(f.metadata.get("help", "")).split()))
        for f in dataclasses.fields(cls)
        if f.init
    }


def field_help(group: str, name: str) -> str:
    """The first sentence of the library's own help for a field (for YAML comments and ``--help``)."""
    sentence = library_fields(group)[name][1].split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 120 else sentence[:117] + "..."


def settable(group: str, typed: Iterable[str]) -> list[str]:
    """Library fields a recipe may set under ``group`` (the preset's own fields ``typed`` excluded)."""
    return [n for n in library_fields(group) if n not in RESERVED[group] and n not in set(typed)]


def validated(group: str, values: Mapping[str, Any], typed: Iterable[str]) -> Settings:
    """``values`` checked against the installed library and turned into its field types."""
    if not values:
        return Settings()
    typed, out = list(typed), {}
    for name, value in values.items():
        key = f"{group}.{name}"
        if name in typed:
            raise RecipeError(
                f"{key} is a dpo_hub field of the preset; set it as {key}, not as a pass-through setting"
            )
        if name in RESERVED[group]:
            raise RecipeError(f"{key} is set by dpo_hub; use {RESERVED[group][name]} instead")
        if name not in library_fields(group):
            keys = [f"{group}.{n}" for n in typed + settable(group, typed)]
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            _, cls = LIBRARY[group]
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise RecipeError(
                f"unknown recipe key {key!r}: neither a dpo_hub key nor a field of the installed "
                f"{cls}; {hint}see {DOCS[group]}"
            )
        out[name] = coerce(value, library_fields(group)[name][0], key)
        if isinstance(out[name], dict):
            _check_mapping_keys(key, out[name], mapping_keys(group, name))
    return Settings(out)


def mapping_keys(group: str, name: str) -> list[str] | None:
    """The keys a mapping-valued library field accepts (its config dataclass's fields, or the keyword
    arguments of what it is passed to); None: any key (a pattern -> value mapping, or unknown)."""
    import inspect

    configs = [a for a in options(library_fields(group)[name][0]) if is_config(a)]
    if configs:
        return [f.name for f in dataclasses.fields(configs[0]) if f.init]
    if (group, name) == ("dpo", "accelerator_config"):
        from transformers.trainer_pt_utils import AcceleratorConfig

        return [f.name for f in dataclasses.fields(AcceleratorConfig) if f.init]
    if (group, name) == ("dpo", "gradient_checkpointing_kwargs"):  # transformers passes them to torch's
        from torch.utils.checkpoint import checkpoint

        keywords = inspect.signature(checkpoint).parameters.items()
        return [n for n, p in keywords if p.kind == p.KEYWORD_ONLY] + ["preserve_rng_state"]
    return None


def _check_mapping_keys(key: str, value: dict, allowed: list[str] | None) -> None:
    """An unknown key inside a mapping-valued setting is an error naming it, with the closest valid ones."""
    unknown = [k for k in value if allowed is not None and k not in allowed]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), allowed, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise RecipeError(
            f"{key}: unknown key {unknown[0]!r} (the library would ignore it or fail later); {hint}"
            f"valid keys: {', '.join(allowed)}"
        )


def library_kwargs(group: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as keyword arguments of the library class (a mapping for a config-typed field becomes
    it)."""
    out = {}
    for name, value in values.items():
        hint = library_fields(group)[name][0]
        configs = [a for a in options(hint) if is_config(a)]
        if isinstance(value, dict) and configs and not any(origin(a) is dict for a in options(hint)):
            value = configs[0](**value)
        out[name] = value
    return out
