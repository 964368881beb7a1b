"""``Recipe``: a data adapter, a LoRA preset and a DPO preset, as plain typed data (it runs nothing).

A recipe round-trips to YAML, has a stable fingerprint, and ``replace``/``override`` return new
recipes (the old one is frozen). Dotted keys (``dpo.beta``, ``data.limit``) address nested fields;
an unknown key fails before anything loads, naming the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_hub.config.fields import field_help, settable
from dpo_hub.config.model import ModelSpec
from dpo_hub.config.presets import DPO_PRESETS, LORA_PRESETS, DPOPreset, Generation, LoraPreset
from dpo_hub.config.values import check, check_repo_id, coerce, load_yaml
from dpo_hub.data.adapters import ADAPTERS, DataAdapter, UltraFeedback
from dpo_hub.data.files import absolute_paths
from dpo_hub.data.mixture import Mixture, is_mixture_change
from dpo_hub.data.mixture import build as build_mixture
from dpo_hub.errors import RecipeError


@dataclass(frozen=True)
class Recipe:
    """Everything a DPO run needs, as plain data; ``dpo_hub.train(recipe)`` runs it."""

    model: ModelSpec = field(
        default_factory=ModelSpec,
        metadata={
            "help": "The base model: a name (Hub id, folder, .gguf file; auto: gpt2, the embedded tiny GPT-2 "
            "offline) or a group of model.* loading settings."
        },
    )
    data: DataAdapter | Mixture = field(default_factory=UltraFeedback)
    lora: LoraPreset = field(default_factory=LoraPreset.gpt2_attention)
    dpo: DPOPreset = field(default_factory=DPOPreset.tutorial)
    generation: Generation = field(default_factory=Generation)
    output_dir: str = field(default="outputs/gpt2-dpo", metadata={"help": "Where the run's files go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a finished run in output_dir."}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Repo id to publish the adapter to after training."}
    )
    resume: str = field(
        default="auto",
        metadata={
            "help": "auto: continue from the newest complete checkpoint of this recipe in "
            "OUTPUT_DIR.checkpoints; never: start over (discards them); or a checkpoint folder."
        },
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads per process; None: all cores / processes."}
    )
    name: str = field(
        default="custom", metadata={"help": "Recipe name, recorded in outputs and model cards."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.model, str):  # Recipe(model="gpt2"): a plain name is a whole model spec
            object.__setattr__(self, "model", ModelSpec(name=self.model))
        check(
            "model",
            self.model,
            isinstance(self.model, ModelSpec),
            "a name or a model group",
            "e.g. gpt2, or {name: gpt2, dtype: bfloat16}",
        )
        object.__setattr__(self, "output_dir", os.path.expanduser(self.output_dir))  # ~/runs/x, not ./~
        if self.resume not in ("auto", "never"):
            object.__setattr__(self, "resume", os.path.expanduser(self.resume))
        for key in ("output_dir", "name"):
            check(
                key,
                getattr(self, key),
                bool(str(getattr(self, key)).strip()),
                "non-empty",
                "a name or a path",
            )
        check(
            "threads",
            self.threads,
            self.threads is None or self.threads >= 1,
            ">= 1 or null",
            "null: all cores shared by the processes",
        )
        check(
            "resume",
            self.resume,
            bool(self.resume.strip()),
            "auto, never or a checkpoint folder",
            "auto continues this recipe's newest checkpoint",
        )
        if self.push_to_hub is not None:
            check_repo_id(self.push_to_hub, key="push_to_hub")

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data; pass-through settings sit beside the preset's fields
        (``dpo: {beta: 0.1, weight_decay: 0.01}``)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["data"] = {"kind": self.data.kind, **out["data"]}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe") -> Recipe:
        return cls().override(values, source=source)

    def to_yaml(self, header: str = "") -> str:
        """YAML with each field's help as an inline comment (``r: 4  # LoRA rank; higher: more memory``)."""
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                lines.append(_yaml_line(f.name, value, f.metadata.get("help", "")))
                continue
            lines.append(f"{f.name}:")
            if f.name == "data":
                lines.append(_yaml_line("kind", value.kind, f"one of {', '.join(ADAPTERS)}, mix", indent=2))
            lines += _group_lines(f.name, value)
        return "\n".join(lines) + "\n"

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        try:
            values = load_yaml(Path(path).read_text(encoding="utf-8"), str(path)) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err})") from err
        except (OSError, UnicodeDecodeError) as err:
            raise RecipeError(
                f"{path}: cannot read the recipe file ({type(err).__name__}: {err}); check the path"
            ) from err
        if not isinstance(values, dict):
            raise RecipeError(
                f"{path}: a recipe file must hold a mapping of keys, got {type(values).__name__}"
            )
        return cls.from_dict(values, source=str(path))

    def fingerprint(self) -> str:
        """Stable 12-hex id of what the run computes (output location and publishing excluded)."""
        values = self.replace(data=absolute_paths(self.data)).to_dict()  # one file, one fingerprint
        for key in ("output_dir", "overwrite_output_dir", "push_to_hub", "resume", "threads", "name"):
            values.pop(key)
        for group in _PRESET_GROUPS:  # the fields say what is computed, not the preset they started from
            values[group].pop("preset")
        values["dpo"].pop("report_to", None)  # where logs go
        values["dpo"].pop("bf16_base_weights", None)  # bitwise the same results either way
        if (
            self.model.is_plain()
        ):  # as before the model group existed: a plain name's fingerprint is unchanged
            values["model"] = self.model.name
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]

    # ---- changes -------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Recipe:
        """A new recipe with top-level fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def override(self, changes: dict[str, Any], source: str = "override") -> Recipe:
        """A new recipe with dotted keys set, e.g. ``{"dpo.beta": 0.2, "data.limit": 50}``.

        In phases: flatten the keys, apply those that replace a whole group (a mixture, ``data.kind``, a
        preset), type the others group by group, then build the new recipe from them.
        """
        changes = _flatten(changes, source)  # {"dpo": {"beta": "0.2"}} is "dpo.beta": "0.2", alike
        recipe, changes = _apply_mixture(self, changes, source)
        recipe, changes = _apply_kind_and_presets(recipe, changes, source)
        grouped = _typed_by_group(recipe, changes, source)
        return _build(recipe, grouped, source)

    @classmethod
    def keys(cls, recipe: Recipe | None = None, passthrough: bool = False) -> list[str]:
        """Every dotted key a recipe accepts; ``passthrough``: with every trl/peft field (imports them)."""
        recipe = recipe or cls()
        out = [k for k in _field_types(Recipe) if k not in _NESTED]
        for head in _NESTED:
            typed = list(_field_types(type(getattr(recipe, head))))
            out += [f"{head}.{k}" for k in typed]
            if passthrough and head in _PRESET_GROUPS:
                out += [f"{head}.{k}" for k in settable(head, typed)]
        return out + ["data.kind"]


_NESTED = ("model", "data", "lora", "dpo", "generation")
_PRESET_GROUPS = {"lora": LORA_PRESETS, "dpo": DPO_PRESETS}
_GROUP_EXAMPLES = {
    "model": ModelSpec,
    "data": UltraFeedback,
    "lora": LoraPreset,
    "dpo": DPOPreset,
    "generation": Generation,
}
_WHOLE_TEXT_LISTS = ("generation.prompts",)  # text from the command line is one item; pass [a, b] for several


def _plain(value: Any) -> Any:
    if hasattr(value, "to_plain"):  # a mixture and its sources
        return value.to_plain()
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            out.update(
                {k: _plain(v) for k, v in item.items()}
                if f.metadata.get("passthrough")
                else {f.name: _plain(item)}
            )
        return out
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _yaml_line(key: str, value: Any, help_text: str, indent: int = 0) -> str:
    if (
        isinstance(value, tuple) and value and hasattr(value[0], "to_plain")
    ):  # a mixture's sources, one a line
        items = [f"{' ' * (indent + 2)}- {_yaml_line('x', v, '').partition(': ')[2]}" for v in value]
        return "\n".join([f"{' ' * indent}{key}:" + (f"  # {help_text}" if help_text else ""), *items])
    if isinstance(value, str) and (
        "\n" in value or value != value.strip()
    ):  # "\n" on one line, as YAML reads it
        dumped = json.dumps(value, ensure_ascii=False)
    else:
        dumped = yaml.safe_dump(
            _plain(value), default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False
        )
        dumped = dumped.strip().removesuffix("...").strip()
    return f"{' ' * indent}{key}: {dumped}" + (f"  # {help_text}" if help_text else "")


def _group_lines(group: str, value: Any) -> list[str]:
    """A group's YAML lines: its preset first, its fields, then pass-through settings with the library's
    help."""
    fields = sorted(dataclasses.fields(value), key=lambda f: f.name != "preset")
    lines = [
        _yaml_line(f.name, getattr(value, f.name), f.metadata.get("help", ""), indent=2)
        for f in fields
        if not f.metadata.get("passthrough")
    ]
    return lines + [
        _yaml_line(k, v, field_help(group, k), indent=2) for k, v in getattr(value, "extra", {}).items()
    ]


def _preset(group: str, name: Any, source: str) -> Any:
    """The named preset of ``group`` (``lora``/``dpo``), recording its name."""
    presets = _PRESET_GROUPS[group]
    if not isinstance(name, str) or name not in presets:
        close = difflib.get_close_matches(str(name), list(presets), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise RecipeError(
            f"{source}: {group}.preset={name!r} is unknown; {hint}use one of: {', '.join(presets)}"
        )
    return dataclasses.replace(presets[name](), preset=name)


def _flatten(values: dict[str, Any], source: str) -> dict[str, Any]:
    """``{"dpo": {"beta": 0.2}}`` -> ``{"dpo.beta": 0.2}``; a group that is not a mapping is an error."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise RecipeError(
                f"{source}: recipe key {key!r} is not a name; keys look like dpo.beta or output_dir"
            )
        if key not in _NESTED:
            flat[key] = value
        elif key == "model" and isinstance(value, str):  # model: gpt2 / --model gpt2 names the model
            flat["model.name"] = value
        elif isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        elif value is not None:  # an empty ``dpo:`` in YAML changes nothing
            example = dataclasses.fields(_GROUP_EXAMPLES[key])[0].name
            raise RecipeError(
                f"{source}: {key} must be a mapping of {key}.* keys (e.g. {key}: {{{example}: ...}} "
                f"or --{key}.{example} ...), got {type(value).__name__} {value!r}"
            )
    return flat


def _apply_mixture(recipe: Recipe, changes: dict[str, Any], source: str) -> tuple[Recipe, dict[str, Any]]:
    """Build or edit a mixture from the ``data.*`` keys (data.mix, data.mix.N.KEY, data.seed); return the
    other keys."""
    if not is_mixture_change(recipe.data, changes):
        return recipe, changes
    mixing = {k.removeprefix("data."): v for k, v in changes.items() if k.startswith("data.")}
    rest = {k: v for k, v in changes.items() if not k.startswith("data.")}
    return recipe.replace(data=build_mixture(recipe.data, mixing, source, _coerce)), rest


def _apply_kind_and_presets(
    recipe: Recipe, changes: dict[str, Any], source: str
) -> tuple[Recipe, dict[str, Any]]:
    """Switch ``data.kind`` and load ``lora.preset``/``dpo.preset`` first, whatever the order; return the
    other keys."""
    rest = dict(changes)
    try:
        if "data.kind" in rest:
            recipe = recipe.replace(data=_switch_adapter(recipe.data, rest.pop("data.kind"), source))
        for group in _PRESET_GROUPS:  # a preset first: the other keys of its group apply on top
            if f"{group}.preset" in rest:
                recipe = recipe.replace(**{group: _preset(group, rest.pop(f"{group}.preset"), source)})
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:
        raise RecipeError(err if str(err).startswith(source) else f"{source}: {err}") from err
    return recipe, rest


def _typed_by_group(recipe: Recipe, changes: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """``{group: {field: typed value}}`` (``""``: top-level fields); an unknown key fails naming the closest
    ones."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            part = getattr(recipe, head, None) if head in _NESTED else None
            if part is not None and rest not in _field_types(type(part)) and head in _PRESET_GROUPS:
                grouped.setdefault(head, {}).setdefault("extra", dict(part.extra))[rest] = (
                    value  # preset checks it
                )
                continue
            if part is None or rest not in _field_types(type(part)):
                raise RecipeError(_unknown(key, recipe, source))
            grouped.setdefault(head, {})[rest] = _coerce(value, _field_types(type(part))[rest], key, source)
        elif key in _field_types(Recipe) and key not in _NESTED:
            grouped.setdefault("", {})[key] = _coerce(value, _field_types(Recipe)[key], key, source)
        else:
            raise RecipeError(_unknown(key, recipe, source))
    return grouped


def _build(recipe: Recipe, grouped: dict[str, dict[str, Any]], source: str) -> Recipe:
    """The recipe with the typed values set; the groups' and the recipe's own checks become one
    ``RecipeError``."""
    grouped = dict(grouped)
    top = grouped.pop("", {})
    try:
        nested = {head: dataclasses.replace(getattr(recipe, head), **vals) for head, vals in grouped.items()}
        return dataclasses.replace(recipe, **top, **nested)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{source}: {err}") from err


def _field_types(cls: type) -> dict[str, Any]:
    """The fields a recipe key addresses (a preset's pass-through mapping is addressed by its entries'
    names)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if not f.metadata.get("passthrough")}


def _switch_adapter(current: DataAdapter, kind: Any, source: str) -> DataAdapter:
    """The adapter of ``kind``, keeping the selection (split, eval fraction, seed) but not the source or its
    limit."""
    if not isinstance(kind, str) or kind not in ADAPTERS:
        raise RecipeError(
            f"{source}: data.kind={kind!r} is unknown; use one of {sorted(ADAPTERS)} or mix"
            f"{ADAPTERS.why_missing(kind) if isinstance(kind, str) else ''}"
        )
    if kind == current.kind:
        return current
    target = ADAPTERS[kind]
    shared = {
        f.name: getattr(current, f.name)
        for f in dataclasses.fields(current)
        if f.name in _field_types(target)
    }
    shared.pop("dataset", None)
    shared.pop("limit", None)  # a limit suited to one source would silently cut another
    return target(**shared)


def _unknown(key: str, recipe: Recipe, source: str) -> str:
    head, _, rest = key.partition(".")
    keys = Recipe.keys(recipe)
    if head in _NESTED and rest:
        keys = [k for k in keys if k.startswith(f"{head}.")]
        owners = [kind for kind, cls in ADAPTERS.items() if head == "data" and rest in _field_types(cls)]
        if owners:
            return (
                f"{source}: {key} is a key of data.kind={' or '.join(owners)}, not of this recipe's "
                f"data.kind={recipe.data.kind}; switch with data.kind or use one of {', '.join(keys)}"
            )
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid keys: {', '.join(keys)}"
    return f"{source}: unknown recipe key {key!r}{hint}"


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Turn a CLI string (or YAML value) into the field's declared type."""
    if key in _WHOLE_TEXT_LISTS and isinstance(value, str) and not value.strip().startswith("["):
        value = [value]  # a prompt is one item as written (commas, trailing newlines and all)
    try:
        return coerce(value, hint, key)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
