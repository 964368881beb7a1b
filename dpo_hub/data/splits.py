"""Held-out groups: which rows go to eval so that eval shares no group (prompt, family...) with train."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from dpo_hub.errors import DataError
from dpo_hub.sources.models import AUTO


def split_column(adapter: Any, columns: list[str]) -> str | None:
    """The column whose groups are held out whole: ``split_by`` resolved against the raw columns."""
    name = adapter.split_by
    if name is None or name.lower() in ("none", "null"):
        return None
    if name == AUTO:
        return "group" if "group" in columns else "prompt"
    if name not in columns and name != "prompt":
        raise DataError(
            f"{adapter.dataset}: data.split_by={name!r} is not a column; found {columns}. "
            "Name one of them, use auto, or null to split by row."
        )
    return name


def group_key(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    )


def held_out_groups(adapter: Any, keys: list[str], n_eval: int, column: str) -> set[str]:
    """Whole groups for eval: the unique keys sorted, shuffled with ``seed``, taken in that order until the
    eval pairs reach ``n_eval`` (the group that reaches or passes it is the last one taken); at least one
    group always stays in train."""
    sizes = Counter(keys)
    if len(sizes) < 2:
        raise DataError(
            f"{adapter.dataset}: {len(keys)} pair(s) in {len(sizes)} group(s) of {column!r}: too small to "
            "hold out whole groups for eval. Lower data.eval_fraction to 0 (no eval split) or set "
            "data.split_by null (a random row split, whose eval rows may repeat train content)."
        )
    order = sorted(sizes)
    random.Random(adapter.seed).shuffle(order)
    taken: set[str] = set()
    count = 0
    for key in order[:-1]:
        taken.add(key)
        count += sizes[key]
        if count >= n_eval:
            break
    return taken
