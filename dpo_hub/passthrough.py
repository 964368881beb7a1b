"""Pass-through settings: any ``trl.DPOConfig`` field under ``dpo:``, any ``peft.LoraConfig`` field under ``lora:``.

Names, types and help text are read from the INSTALLED libraries' dataclasses, so a newer trl or peft brings
its fields without a dpo_hub release. Fields dpo_hub decides itself are refused, naming the key to use.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dpo_hub.errors import RecipeError

LIBRARY = {"dpo": ("trl", "DPOConfig"), "lora": ("peft", "LoraConfig")}
DOCS = {"dpo": "https://huggingface.co/docs/trl/dpo_trainer#trl.DPOConfig",
        "lora": "https://huggingface.co/docs/peft/package_reference/lora#peft.LoraConfig"}
_PUSH = "push_to_hub (dpo_hub pushes the finished adapter and its card)"
_MODEL = "model (dpo_hub loads the model and passes it to the trainer)"
RESERVED = {  # field -> the dpo_hub key (or reason) that sets it instead
    "dpo": {
        "output_dir": "output_dir (checkpoints go to OUTPUT_DIR.checkpoints)", "bf16": "dpo.precision",
        "fp16": "dpo.precision", "bf16_full_eval": "dpo.precision", "fp16_full_eval": "dpo.precision",
        "use_cpu": "the accelerate config (dpo_hub trains on the CPU when no GPU is visible)",
        "resume_from_checkpoint": "resume", "push_to_hub": _PUSH, "hub_model_id": _PUSH, "hub_strategy": _PUSH,
        "hub_private_repo": _PUSH, "hub_always_push": _PUSH, "hub_revision": _PUSH,
        "hub_token": "`hf auth login` or HF_TOKEN (tokens never go into recipe files)",
        "ddp_find_unused_parameters": "nothing: dpo_hub sets it to false (the reference is the base, adapter off)",
        "model_init_kwargs": _MODEL, "ref_model_init_kwargs": _MODEL,
    },
    "lora": {
        "task_type": "nothing: dpo_hub trains causal LMs (CAUSAL_LM)", "peft_type": "nothing: this is LoRA",
        "base_model_name_or_path": "model", "revision": "model", "inference_mode": "nothing: adapters train",
        "auto_mapping": "nothing: peft sets it", "peft_version": "nothing: peft records it",
    },
}


class Settings(Mapping[str, Any]):
    """A read-only mapping of pass-through settings (field name -> value) that pickles and compares by value."""

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


@functools.cache
def library_fields(group: str) -> dict[str, tuple[Any, str]]:
    """``{field: (type hint, help text)}`` of the installed ``DPOConfig`` (``dpo``) or ``LoraConfig`` (``lora``)."""
    import importlib

    module, name = LIBRARY[group]
    cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    return {f.name: (hints.get(f.name, Any), " ".join(str(f.metadata.get("help", "")).split()))
            for f in dataclasses.fields(cls) if f.init}


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
            raise RecipeError(f"{key} is a dpo_hub field of the preset; set it as {key}, not as a pass-through setting")
        if name in RESERVED[group]:
            raise RecipeError(f"{key} is set by dpo_hub; use {RESERVED[group][name]} instead")
        if name not in library_fields(group):
            keys = [f"{group}.{n}" for n in typed + settable(group, typed)]
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            _, cls = LIBRARY[group]
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise RecipeError(f"unknown recipe key {key!r}: neither a dpo_hub key nor a field of the installed "
                              f"{cls}; {hint}see {DOCS[group]}")
        out[name] = coerce(value, library_fields(group)[name][0], key)
    return Settings(out)


def library_kwargs(group: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as keyword arguments of the library class (a mapping for a config-typed field becomes it)."""
    out = {}
    for name, value in values.items():
        hint = library_fields(group)[name][0]
        configs = [a for a in _options(hint) if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and configs and not any(_origin(a) is dict for a in _options(hint)):
            value = configs[0](**value)
        out[name] = value
    return out


def coerce(value: Any, hint: Any, key: str) -> Any:
    """A YAML value or command-line text as type ``hint``; RecipeError naming ``key`` and the type otherwise."""
    origin, args = _origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        options = sorted(_options(hint), key=lambda a: _origin(a) in (list, tuple, dict))  # scalars first
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            return coerce(value, enums[0], key)
        for option in options:
            try:
                return coerce(value, option, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key} must be {describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if any(value == c or (isinstance(c, str) and "[" in c and str(value).startswith(c.split("[")[0])) for c in args):
            return value
        raise RecipeError(f"{key}={value!r} must be one of: {', '.join(map(str, args))}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [e.value for e in hint]
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
            hint_text = f"did you mean {' or '.join(close)}? " if close else ""
            raise RecipeError(f"{key}={value!r} is not allowed; {hint_text}use one of: {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = _yaml(value, key) if value.strip().startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be {describe(hint)} (a list, or comma-separated text), got {value!r}")
        items = [coerce(v, args[0] if args else Any, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        value = _yaml(value, key) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise RecipeError(f"{key} must be a mapping (YAML, or text like '{{a: 1}}'), got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return coerce(value, dict, key)
    return _scalar(value, hint, key)


def describe(hint: Any) -> str:
    """A type hint in words: ``int, list of int or null``."""
    if _origin(hint) in (typing.Union, types.UnionType):
        words = [describe(a) for a in typing.get_args(hint) if a is not type(None)]
        words += ["null"] if type(None) in typing.get_args(hint) else []
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    if _origin(hint) in (list, tuple):
        return f"list of {describe(typing.get_args(hint)[0])}" if typing.get_args(hint) else "list"
    if _origin(hint) is dict:
        return "mapping"
    if _origin(hint) is typing.Literal:
        return "one of " + "/".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def _scalar(value: Any, hint: Any, key: str) -> Any:
    wrong = RecipeError(f"{key} must be {describe(hint)}, got {type(value).__name__} {value!r}")
    if isinstance(value, (dict, list, tuple)) or (isinstance(value, bool) and hint in (int, float)):
        raise wrong
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise wrong
    if hint in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise wrong from None
        if hint is int and not number.is_integer():
            raise wrong
        return int(number) if hint is int else number
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise wrong
        return str(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise RecipeError(f"{key} has type {describe(hint)}, which a recipe cannot set")


def _yaml(text: str, key: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{key}: {text!r} is not valid YAML ({err})") from None


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint) or (hint if hint in (list, tuple, dict) else None)


def _options(hint: Any) -> list[Any]:
    if _origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]
