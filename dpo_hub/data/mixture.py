"""Mixtures as recipe data (schema and parsing): several dataset adapters, each with a row count or a weight,
mixed with a seed.

``data: {kind: mix, mix: [{kind: ultrafeedback, rows: 300}, {kind: preferences, dataset: my.jsonl,
weight: 0.25}], seed: 42}``. Each source is prepared on its own (its own limit, drops and held-out
split by its own ``split_by``); the mixed train set takes ``rows`` train pairs from a source, or a
``weight`` share of the mixed train set; eval is the union of the sources' held-out parts (any eval
pair whose prompt is trained on by another source is dropped, so eval stays disjoint in content).
Preparing the pairs of a mixture (or of one adapter) is ``data.mixing``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from dpo_hub.data.adapters import ADAPTERS, DataAdapter
from dpo_hub.errors import RecipeError

log = logging.getLogger("dpo_hub")
Coerce = Callable[[Any, Any, str, str], Any]  # (value, type hint, key, source) -> typed value


@dataclass(frozen=True)
class MixSource:
    """One adapter of a mixture with how much of it to take: ``rows`` train pairs or a ``weight`` share."""

    adapter: DataAdapter
    rows: int | None = None
    weight: float | None = None

    def to_plain(self) -> dict[str, Any]:
        fields = {f.name: getattr(self.adapter, f.name) for f in dataclasses.fields(self.adapter)}
        amount = (
            {"rows": self.rows} if self.rows is not None else {"weight": self.weight} if self.weight else {}
        )
        return {"kind": self.adapter.kind, **fields, **amount}

    def label(self) -> str:
        return f"{self.adapter.kind}:{self.adapter.dataset}"


@dataclass(frozen=True)
class Mixture:
    """Several adapters mixed into one train set (and one held-out set) with a seed."""

    kind: ClassVar[str] = "mix"
    mix: tuple[MixSource, ...] = field(
        default=(),
        metadata={
            "help": "Sources: each an adapter's keys (kind, dataset, limit, ...) plus rows: N train pairs or "
            "weight: share of the mixed train set (rows and weights together: weights are shares of the "
            "whole, summing below 1; weights alone are relative). Neither: all its train pairs."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed that draws and shuffles the mixed rows."})

    def __post_init__(self) -> None:
        if len(self.mix) < 1:
            raise RecipeError(
                "data.mix is empty: list at least one source, e.g. data.mix: [{kind: ultrafeedback, "
                "rows: 300}, {kind: preferences, dataset: my.jsonl, weight: 0.25}]"
            )
        for i, entry in enumerate(self.mix):
            where = f"data.mix[{i}] ({entry.label()})"
            if entry.rows is not None and entry.weight is not None:
                raise RecipeError(f"{where}: sets both rows={entry.rows} and weight={entry.weight}; keep one")
            if entry.rows is not None and (isinstance(entry.rows, bool) or entry.rows < 1):
                raise RecipeError(
                    f"{where}: rows={entry.rows!r} must be an integer >= 1 (train pairs taken from it)"
                )
            if entry.weight is not None and not (math.isfinite(entry.weight) and entry.weight > 0):
                raise RecipeError(
                    f"{where}: weight={entry.weight!r} must be a finite number > 0 (its share of the mix)"
                )
        weights = [e.weight for e in self.mix if e.weight is not None]
        if weights and len(weights) < len(self.mix) and sum(weights) >= 1:
            raise RecipeError(
                f"data.mix: weights {weights} sum to {sum(weights):g}; beside sources with rows they are "
                "shares of the whole mix and must sum below 1"
            )

    def to_plain(self) -> dict[str, Any]:
        return {"mix": [entry.to_plain() for entry in self.mix], "seed": self.seed}

    @property
    def dataset(self) -> str:
        """A label of every source (where one adapter has its ``dataset``)."""
        return " + ".join(entry.label() for entry in self.mix)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(entry.adapter.dataset for entry in self.mix)


def is_mixture_change(data: Any, changes: dict[str, Any]) -> bool:
    """Whether ``data.*`` ``changes`` build or edit a mixture (``data.mix`` given, ``data.kind: mix``, or one
    already)."""
    kind = changes.get("data.kind")
    if kind is not None:
        return kind == Mixture.kind
    return isinstance(data, Mixture) or any(k == "data.mix" or k.startswith("data.mix.") for k in changes)


def build(current: Any, changes: dict[str, Any], source: str, coerce: Coerce) -> Mixture:
    """``current`` (a mixture or not) with ``changes`` (keys after ``data.``: ``mix``, ``seed``,
    ``mix.N.KEY``)."""
    entries = list(current.mix) if isinstance(current, Mixture) else []
    seed = current.seed if isinstance(current, Mixture) else 42
    changes = {k: v for k, v in changes.items() if k != "kind"}
    if "mix" in changes:
        value = changes.pop("mix")
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)):
            raise RecipeError(
                f"{source}: data.mix must be a list of sources (e.g. [{{kind: ultrafeedback, rows: 300}}]), "
                f"got {type(value).__name__} {value!r}"
            )
        entries = [_entry(item, None, i, source, coerce) for i, item in enumerate(value)]
    edits: dict[int, dict[str, Any]] = {}
    for key, value in changes.items():
        if key == "seed":
            seed = coerce(value, int, "data.seed", source)
            continue
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head != "mix" or not index.isdigit() or not name:
            raise RecipeError(
                f"{source}: unknown key data.{key} of a mixture; use data.mix, data.seed or "
                "data.mix.N.KEY (e.g. data.mix.0.rows)"
            )
        if int(index) >= len(entries):
            raise RecipeError(
                f"{source}: data.{key}: the mixture has {len(entries)} source(s), numbered from 0"
            )
        edits.setdefault(int(index), {})[name] = value
    for index, values in edits.items():
        entries[index] = _entry(values, entries[index], index, source, coerce)
    try:
        return Mixture(tuple(entries), seed)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None


def _entry(values: Any, current: MixSource | None, index: int, source: str, coerce: Coerce) -> MixSource:
    """One source from its mapping (or edits of ``current``); errors name ``data.mix[index]``."""
    where = f"{source}: data.mix[{index}]"
    if not isinstance(values, dict):
        raise RecipeError(
            f"{where} must be a mapping such as {{kind: preferences, dataset: my.jsonl, weight: 0.25}}, "
            f"got {type(values).__name__} {values!r}"
        )
    values = dict(values)
    kind = values.pop("kind", current.adapter.kind if current else None)
    if kind not in ADAPTERS:
        raise RecipeError(f"{where}: kind={kind!r} must be one of {sorted(ADAPTERS)}")
    cls = ADAPTERS[kind]
    hints = {**typing.get_type_hints(cls), "rows": int | None, "weight": float | None}
    valid = [f.name for f in dataclasses.fields(cls)] + ["rows", "weight"]
    unknown = [k for k in values if k not in valid]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), valid, n=2)
        raise RecipeError(
            f"{where} ({kind}): unknown key {unknown[0]!r}"
            + (f"; did you mean {' or '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}")
        )
    typed = {k: coerce(v, hints[k], f"data.mix.{index}.{k}", source) for k, v in values.items()}
    rows, weight = current.rows if current else None, current.weight if current else None
    if "rows" in typed or "weight" in typed:  # setting one replaces the other unless both are given
        rows, weight = typed.pop("rows", None), typed.pop("weight", None)
    keep = current.adapter if current and current.adapter.kind == kind else None
    try:
        adapter = dataclasses.replace(keep, **typed) if keep else cls(**typed)
    except (RecipeError, TypeError, ValueError) as err:
        raise RecipeError(f"{where} ({kind}): {err}") from None
    return MixSource(adapter, rows, weight)
