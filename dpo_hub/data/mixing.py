"""Recipe data -> prepared pairs: ``auto`` datasets resolved, one adapter prepared, or a mixture's sources
prepared, drawn with its seed and mixed (see ``data.mixture`` for what a mixture is)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any

from dpo_hub.data.adapters import PreferenceData, prepare
from dpo_hub.data.mixture import Mixture
from dpo_hub.errors import DataError
from dpo_hub.sources.models import DEFAULT_DATASET, resolve

log = logging.getLogger("dpo_hub")


def resolve_sources(data: Any, default: str = DEFAULT_DATASET) -> tuple[Any, list[str]]:
    """``data`` with each ``auto`` dataset replaced by what will be used (``default`` when reachable), and the
    notes on any fallback."""
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
    fixed = {
        i: e.rows if e.rows is not None else available[i]
        for i, e in enumerate(mixture.mix)
        if e.weight is None
    }
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
            asked = (
                f"rows={entry.rows}"
                if entry.rows is not None
                else f"weight={entry.weight} ({want} of {round(total)})"
            )
            raise DataError(
                f"data.mix[{i}] ({entry.label()}): {asked} asks for {want} train pairs but it has only "
                f"{have} after its drops and held-out split; lower it, or raise that source's limit"
            )
        if want < 1:
            raise DataError(
                f"data.mix[{i}] ({entry.label()}): weight={entry.weight} gives 0 of {round(total)} train "
                "pairs; raise it or give rows"
            )
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
    trains = [
        p.train.shuffle(seed=mixture.seed + i).select(range(n)) for i, (p, n) in enumerate(zip(parts, counts))
    ]
    train = datasets.concatenate_datasets(trains).shuffle(seed=mixture.seed)
    trained = set(train["prompt"])
    evals = [
        p.eval.select([i for i, prompt in enumerate(p.eval["prompt"]) if prompt not in trained])
        if p.eval is not None
        else None
        for p in parts
    ]
    leaks = sum(len(p.eval) - len(e) for p, e in zip(parts, evals) if e is not None)
    if leaks:
        log.warning("data.mix: %d held-out pair(s) dropped whose prompt another source trains on", leaks)
    kept = [e for e in evals if e is not None and len(e)]
    held_out = datasets.concatenate_datasets(kept) if kept else None
    dropped = Counter(
        {f"{e.label()}: {why}": n for e, p in zip(mixture.mix, parts) for why, n in p.dropped.items()}
    )
    sources = [
        {
            "kind": e.adapter.kind,
            "dataset": e.adapter.dataset,
            "rows": e.rows,
            "weight": e.weight,
            "train_pairs": n,
            "eval_pairs": len(ev) if ev is not None else 0,
            "share": round(n / len(train), 4),
            "held_out_by": p.split_by,
        }
        for e, p, n, ev in zip(mixture.mix, parts, counts, evals)
    ]
    for s in sources:
        log.info(
            "data.mix: %s:%s gives %d train pairs (share %.3f), %d held out",
            s["kind"],
            s["dataset"],
            s["train_pairs"],
            s["share"],
            s["eval_pairs"],
        )
    return PreferenceData(train, held_out, mixture.dataset, dropped, split_by="per source", sources=sources)
