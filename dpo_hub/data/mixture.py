"""Mixtures: several dataset adapters, each with a row count or a weight, mixed with a seed.

``data: {kind: mix, mix: [{kind: ultrafeedback, rows: 300}, {kind: preferences, dataset: my.jsonl,
weight: 0.25}], seed: 42}``. Each source is prepared on its own (its own limit, drops and held-out
split by its own ``split_by``); the mixed train set takes ``rows`` train pairs from a source, or a
``weight`` share of the mixed train set; eval is the union of the sources' held-out parts (any eval
pair whose prompt is trained on by another source is dropped, so eval stays disjoint in content).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from dpo_hub.data.adapters import ADAPTERS, DataAdapter, PreferenceData, prepare
from dpo_hub.errors import DataError, RecipeError
from dpo_hub.sources.models import DEFAULT_DATASET, resolve

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
        amount = {"rows": self.rows} if self.rows is not None else {"weight": self.weight} if self.weight else {}
        return {"kind": self.adapter.kind, **fields, **amount}

    def label(self) -> str:
        return f"{self.adapter.kind}:{self.adapter.dataset}"


@dataclass(frozen=True)
class Mixture:
    """Several adapters mixed into one train set (and one held-out set) with a seed."""

    kind: ClassVar[str] = "mix"
    mix: tuple[MixSource, ...] = field(
        default=(),
        metadata={"help": "Sources: each an adapter's keys (kind, dataset, limit, ...) plus rows: N train pairs or "
                          "weight: share of the mixed train set (rows and weights together: weights are shares of the "
                          "whole, summing below 1; weights alone are relative). Neither: all its train pairs."},
    )
    seed: int = field(default=42, metadata={"help": "Seed that draws and shuffles the mixed rows."})

    def __post_init__(self) -> None:
        if len(self.mix) < 1:
            raise RecipeError("data.mix is empty: list at least one source, e.g. data.mix: [{kind: ultrafeedback, "
                              "rows: 300}, {kind: preferences, dataset: my.jsonl, weight: 0.25}]")
        for i, entry in enumerate(self.mix):
            where = f"data.mix[{i}] ({entry.label()})"
            if entry.rows is not None and entry.weight is not None:
                raise RecipeError(f"{where}: sets both rows={entry.rows} and weight={entry.weight}; keep one")
            if entry.rows is not None and (isinstance(entry.rows, bool) or entry.rows < 1):
                raise RecipeError(f"{where}: rows={entry.rows!r} must be an integer >= 1 (train pairs taken from it)")
            if entry.weight is not None and not (math.isfinite(entry.weight) and entry.weight > 0):
                raise RecipeError(f"{where}: weight={entry.weight!r} must be a finite number > 0 (its share of the mix)")
        weights = [e.weight for e in self.mix if e.weight is not None]
        if weights and len(weights) < len(self.mix) and sum(weights) >= 1:
            raise RecipeError(f"data.mix: weights {weights} sum to {sum(weights):g}; beside sources with rows they are "
                              "shares of the whole mix and must sum below 1")

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
    """Whether ``data.*`` ``changes`` build or edit a mixture (``data.mix`` given, ``data.kind: mix``, or one already)."""
    kind = changes.get("data.kind")
    if kind is not None:
        return kind == Mixture.kind
    return isinstance(data, Mixture) or any(k == "data.mix" or k.startswith("data.mix.") for k in changes)


def build(current: Any, changes: dict[str, Any], source: str, coerce: Coerce) -> Mixture:
    """``current`` (a mixture or not) with ``changes`` (keys after ``data.``: ``mix``, ``seed``, ``mix.N.KEY``)."""
    entries = list(current.mix) if isinstance(current, Mixture) else []
    seed = current.seed if isinstance(current, Mixture) else 42
    changes = {k: v for k, v in changes.items() if k != "kind"}
    if "mix" in changes:
        value = changes.pop("mix")
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{source}: data.mix must be a list of sources (e.g. [{{kind: ultrafeedback, rows: 300}}]), "
                              f"got {type(value).__name__} {value!r}")
        entries = [_entry(item, None, i, source, coerce) for i, item in enumerate(value)]
    edits: dict[int, dict[str, Any]] = {}
    for key, value in changes.items():
        if key == "seed":
            seed = coerce(value, int, "data.seed", source)
            continue
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head != "mix" or not index.isdigit() or not name:
            raise RecipeError(f"{source}: unknown key data.{key} of a mixture; use data.mix, data.seed or "
                              "data.mix.N.KEY (e.g. data.mix.0.rows)")
        if int(index) >= len(entries):
            raise RecipeError(f"{source}: data.{key}: the mixture has {len(entries)} source(s), numbered from 0")
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
        raise RecipeError(f"{where} must be a mapping such as {{kind: preferences, dataset: my.jsonl, weight: 0.25}}, "
                          f"got {type(values).__name__} {values!r}")
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
        raise RecipeError(f"{where} ({kind}): unknown key {unknown[0]!r}" +
                          (f"; did you mean {' or '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"))
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


def resolve_sources(data: Any, default: str = DEFAULT_DATASET) -> tuple[Any, list[str]]:
    """``data`` with each ``auto`` dataset replaced by what will be used (``default`` when reachable), and the notes
    on any fallback."""
    if not isinstance(data, Mixture):
        dataset, note = resolve(data.dataset, default, "dataset")
        return dataclasses.replace(data, dataset=dataset), [note] if note else []
    entries, notes = [], []
    for entry in data.mix:
        adapter, more = resolve_sources(entry.adapter, default)
        entries.append(dataclasses.replace(entry, adapter=adapter))
        notes += [n for n in more if n not in notes]
    return dataclasses.replace(data, mix=tuple(entries)), notes


def datasets_of(data: Any) -> tuple[str, ...]:
    return data.datasets if isinstance(data, Mixture) else (data.dataset,)


def prepare_data(data: Any, tokenizer: Any, max_length: int | None = None) -> PreferenceData:
    """``prepare`` for one adapter or a mixture."""
    if isinstance(data, Mixture):
        return prepare_mixture(data, tokenizer, max_length)
    return prepare(data, tokenizer, max_length)


def plan(mixture: Mixture, available: list[int]) -> list[int]:
    """Train pairs to take from each source, given how many each has; a source short of rows is an error."""
    fixed = {i: e.rows if e.rows is not None else available[i]
             for i, e in enumerate(mixture.mix) if e.weight is None}
    weighted = {i: e.weight for i, e in enumerate(mixture.mix) if e.weight is not None}
    if fixed:
        total = sum(fixed.values()) / (1 - sum(weighted.values()))
    else:  # weights alone are relative: the largest mix every source can fill
        shares = {i: w / sum(weighted.values()) for i, w in weighted.items()}
        total = min(available[i] / s for i, s in shares.items())
        weighted = shares
    counts = [fixed[i] if i in fixed else round(total * weighted[i]) for i in range(len(mixture.mix))]
    for i, (want, have) in enumerate(zip(counts, available)):
        entry = mixture.mix[i]
        if want > have:
            asked = f"rows={entry.rows}" if entry.rows is not None else f"weight={entry.weight} ({want} of {round(total)})"
            raise DataError(f"data.mix[{i}] ({entry.label()}): {asked} asks for {want} train pairs but it has only "
                            f"{have} after its drops and held-out split; lower it, or raise that source's limit")
        if want < 1:
            raise DataError(f"data.mix[{i}] ({entry.label()}): weight={entry.weight} gives 0 of {round(total)} train "
                            "pairs; raise it or give rows")
    return counts


def prepare_mixture(mixture: Mixture, tokenizer: Any, max_length: int | None = None) -> PreferenceData:
    """Prepare each source, draw its rows with the mixture's seed, and mix; ``sources`` records the shares."""
    import datasets

    parts = []
    for i, entry in enumerate(mixture.mix):
        try:
            parts.append(prepare(entry.adapter, tokenizer, max_length))
        except DataError as err:
            raise DataError(f"data.mix[{i}] ({entry.label()}): {err}") from err
    counts = plan(mixture, [len(p.train) for p in parts])
    trains = [p.train.shuffle(seed=mixture.seed + i).select(range(n)) for i, (p, n) in enumerate(zip(parts, counts))]
    train = datasets.concatenate_datasets(trains).shuffle(seed=mixture.seed)
    trained = set(train["prompt"])
    evals = [p.eval.select([i for i, prompt in enumerate(p.eval["prompt"]) if prompt not in trained])
             if p.eval is not None else None for p in parts]
    leaks = sum(len(p.eval) - len(e) for p, e in zip(parts, evals) if e is not None)
    if leaks:
        log.warning("data.mix: %d held-out pair(s) dropped whose prompt another source trains on", leaks)
    kept = [e for e in evals if e is not None and len(e)]
    held_out = datasets.concatenate_datasets(kept) if kept else None
    dropped = Counter({f"{e.label()}: {why}": n for e, p in zip(mixture.mix, parts) for why, n in p.dropped.items()})
    sources = [{"kind": e.adapter.kind, "dataset": e.adapter.dataset, "rows": e.rows, "weight": e.weight,
                "train_pairs": n, "eval_pairs": len(ev) if ev is not None else 0,
                "share": round(n / len(train), 4), "held_out_by": p.split_by}
               for e, p, n, ev in zip(mixture.mix, parts, counts, evals)]
    for s in sources:
        log.info("data.mix: %s:%s gives %d train pairs (share %.3f), %d held out", s["kind"], s["dataset"],
                 s["train_pairs"], s["share"], s["eval_pairs"])
    return PreferenceData(train, held_out, mixture.dataset, dropped, split_by="per source", sources=sources)
