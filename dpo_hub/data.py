"""Dataset adapters: any preference source -> ``prompt``/``chosen``/``rejected`` text, split with a seed.

Each adapter is plain typed data (it round-trips through a recipe's YAML under ``data:`` with its
``kind``); ``prepare(adapter, tokenizer)`` loads, converts, drops rows that cannot train (logging a
count and one example per reason) and splits train/eval.

The eval split holds out whole groups (``split_by``): rows that share a value of that column (by
default the source's ``group`` column, else the prompt) all land on the same side, so eval measures
generalisation to unseen questions rather than recall of rows whose twins were trained on.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dpo_hub import embedded
from dpo_hub.errors import DataError
from dpo_hub.sources import AUTO, DEFAULT_DATASET, is_local

log = logging.getLogger("dpo_hub")
Pair = dict[str, str]


@dataclass(frozen=True)
class _Selection:
    split: str = field(default="train", metadata={"help": "Split of the source to read."})
    limit: int | None = field(default=2000, metadata={"help": "First N rows used (the tutorial used 50); None: all."})
    eval_fraction: float = field(default=0.15, metadata={"help": "Share held out for evaluation."})
    seed: int = field(default=42, metadata={"help": "Seed of the train/eval split."})
    split_by: str | None = field(
        default=AUTO,
        metadata={"help": "Column whose equal values stay on one side of the train/eval split (e.g. a question id); "
                          "auto: the source's `group` column when it has one (the embedded sample's template family), "
                          "else `prompt`; null: split by row."},
    )


@dataclass(frozen=True)
class UltraFeedback(_Selection):
    """UltraFeedback-binarized rows (argilla schema): ``prompt``, ``chosen``/``rejected`` message lists."""

    kind: ClassVar[str] = "ultrafeedback"
    columns: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")
    dataset: str = field(
        default=AUTO,
        metadata={"help": f"Hub id or local file; auto: {DEFAULT_DATASET}, the bundled sample offline; embedded."},
    )
    format: str = field(default="text", metadata={"help": "text: last assistant message; chat: chat template."})

    @classmethod
    def tutorial(cls, dataset: str = AUTO) -> UltraFeedback:
        """The tutorial's selection: the first 50 rows as plain text, 90/10 train/eval."""
        return cls(dataset=dataset, limit=50, eval_fraction=0.1)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        if self.format == "chat":
            return _chat_pair(row["chosen"], row["rejected"], tokenizer)
        return {"prompt": _text(row["prompt"]), "chosen": _last_reply(row["chosen"]), "rejected": _last_reply(row["rejected"])}


@dataclass(frozen=True)
class HHRLHF(_Selection):
    """Anthropic HH-RLHF transcripts, split at the last ``Assistant:`` turn."""

    kind: ClassVar[str] = "hh_rlhf"
    columns: ClassVar[tuple[str, ...]] = ("chosen", "rejected")
    dataset: str = field(default="Anthropic/hh-rlhf", metadata={"help": "Hub id or local file."})

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        prompt, chosen = _split_transcript(row["chosen"])
        rejected_prompt, rejected = _split_transcript(row["rejected"])
        if prompt != rejected_prompt:
            raise _Drop("chosen and rejected transcripts differ before the last Assistant turn")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@dataclass(frozen=True)
class Preferences(_Selection):
    """Any Hub dataset or local JSON/JSONL/CSV/Parquet file, with a column mapping."""

    kind: ClassVar[str] = "preferences"
    dataset: str = field(default="", metadata={"help": "Hub id or path to a .json/.jsonl/.csv/.parquet file."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    chosen_column: str = field(default="chosen", metadata={"help": "Column holding the preferred answer."})
    rejected_column: str = field(default="rejected", metadata={"help": "Column holding the other answer."})

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.prompt_column, self.chosen_column, self.rejected_column)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        return {
            "prompt": _text(row[self.prompt_column]),
            "chosen": _last_reply(row[self.chosen_column]),
            "rejected": _last_reply(row[self.rejected_column]),
        }


ADAPTERS = {cls.kind: cls for cls in (UltraFeedback, HHRLHF, Preferences)}
DataAdapter = UltraFeedback | HHRLHF | Preferences


class _Drop(Exception):
    """A row that cannot train; the message is the reason."""


@dataclass
class PreferenceData:
    """Prepared train/eval splits and what was dropped on the way."""

    train: Any
    eval: Any
    source: str
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, dict] = field(default_factory=dict)
    split_by: str | None = None  # the column whose groups were held out whole; None: a random row split


def _text(value: Any) -> str:
    if value is None:
        raise _Drop("missing field")
    if isinstance(value, list):  # a message list: the prompt is the last user turn
        return _text(next((m.get("content") for m in reversed(value) if m.get("role") == "user"), None))
    return str(value)


def _last_reply(value: Any) -> str:
    if isinstance(value, list):
        value = next((m.get("content") for m in reversed(value) if m.get("role") == "assistant"), None)
    return _text(value)


def _split_transcript(text: Any) -> tuple[str, str]:
    marker = "\n\nAssistant:"
    text = _text(text)
    cut = text.rfind(marker)
    if cut < 0:
        raise _Drop("no Assistant turn in transcript")
    return text[: cut + len(marker)], text[cut + len(marker):]


def _chat_pair(chosen: Any, rejected: Any, tokenizer: Any) -> Pair:
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise _Drop("chat format needs message lists")
    if chosen[:-1] != rejected[:-1]:
        raise _Drop("chosen and rejected conversations differ before the last turn")
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(chosen[:-1], tokenize=False, add_generation_prompt=True)
        full = [tokenizer.apply_chat_template(c, tokenize=False) for c in (chosen, rejected)]
        answers = [f[len(prompt):] if f.startswith(prompt) else _last_reply(c) for f, c in zip(full, (chosen, rejected))]
    else:  # no template (GPT-2): a plain "Role: text" transcript
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in chosen[:-1]) + "Assistant:"
        answers = [" " + _last_reply(chosen), " " + _last_reply(rejected)]
    return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}


def load_rows(adapter: DataAdapter):
    """Raw rows of the adapter's source as a ``datasets.Dataset`` (limit applied)."""
    import datasets

    name = adapter.dataset
    if not name:
        raise DataError(f"data.dataset is empty: name a Hub dataset or a local file for data.kind={adapter.kind}")
    if name == embedded.EMBEDDED:
        name = str(embedded.SAMPLE_PATH)
    if is_local(name):
        suffix = name.rsplit(".", 1)[-1]
        builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(suffix)
        if builder is None:
            raise DataError(f"{name}: unsupported file type; use .json, .jsonl, .csv or .parquet")
        try:
            rows = datasets.load_dataset(builder, data_files=name, split="train")
        except FileNotFoundError as err:
            raise DataError(f"{name}: file not found") from err
        except Exception as err:
            raise DataError(f"{name}: could not be read as {builder} ({str(err).splitlines()[0]})") from err
    else:
        rows = datasets.load_dataset(name, split=adapter.split)
    missing = [c for c in adapter.columns if c not in rows.column_names]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {missing}; found {rows.column_names}. "
            "Map your columns with data.prompt_column/chosen_column/rejected_column (data.kind=preferences)."
        )
    if adapter.limit is not None:
        rows = rows.select(range(min(adapter.limit, len(rows))))
    return rows


def convert(adapter: DataAdapter, rows: Any, tokenizer: Any) -> tuple[list[Pair], Counter, dict[str, dict]]:
    """Turn raw rows into pairs; return pairs, drop counts by reason and one example row per reason."""
    pairs, _, dropped, examples = _convert(adapter, rows, tokenizer)
    return pairs, dropped, examples


def _convert(adapter: DataAdapter, rows: Any, tokenizer: Any) -> tuple[list[Pair], list[int], Counter, dict[str, dict]]:
    """``convert`` plus the raw row index of each pair (to read its split column)."""
    pairs, kept, dropped, examples = [], [], Counter(), {}
    for index, row in enumerate(rows):
        try:
            pair = adapter.to_pair(row, tokenizer)
            if not all(pair[k].strip() for k in ("prompt", "chosen", "rejected")):
                raise _Drop("empty text")
            if pair["chosen"].strip() == pair["rejected"].strip():
                raise _Drop("chosen identical to rejected")
        except _Drop as why:
            dropped[str(why)] += 1
            examples.setdefault(str(why), {"row": index, **{k: str(v)[:200] for k, v in row.items()}})
            continue
        pairs.append(pair)
        kept.append(index)
    return pairs, kept, dropped, examples


def prepare(adapter: DataAdapter, tokenizer: Any) -> PreferenceData:
    """Load, convert, drop and split: the data a DPO run trains and evaluates on."""
    import datasets

    rows = load_rows(adapter)
    pairs, kept, dropped, examples = _convert(adapter, rows, tokenizer)
    for reason, count in dropped.items():
        log.warning("dropped %d row(s): %s (e.g. row %s)", count, reason, examples[reason])
    if len(pairs) < 2:
        raise DataError(f"{adapter.dataset}: only {len(pairs)} usable pair(s) after dropping {dict(dropped)}")
    table = datasets.Dataset.from_list(pairs)
    n_eval = max(1, round(len(pairs) * adapter.eval_fraction)) if adapter.eval_fraction > 0 else 0
    if n_eval == 0:
        return PreferenceData(table.shuffle(seed=adapter.seed), None, adapter.dataset, dropped, examples)
    column = _split_column(adapter, rows.column_names)
    if column is None:
        split = table.train_test_split(test_size=n_eval, seed=adapter.seed)
        log.info("eval split: %d of %d pairs drawn at random by row (data.split_by null)", len(split["test"]), len(pairs))
        return PreferenceData(split["train"], split["test"], adapter.dataset, dropped, examples)
    if column in rows.column_names:
        values = rows[column]
        keys = [_group_key(values[i]) for i in kept]
    else:  # ``prompt`` without a raw prompt column (e.g. HH-RLHF transcripts): the converted prompt text
        keys = [pair["prompt"] for pair in pairs]
    eval_keys = _held_out_groups(adapter, keys, n_eval, column)
    is_eval = [key in eval_keys for key in keys]
    train_rows = [i for i, e in enumerate(is_eval) if not e]
    eval_rows = [i for i, e in enumerate(is_eval) if e]
    log.info("eval split: %d pairs in %d groups of %r held out (none of their values occur in train); "
             "train: %d pairs in %d groups", len(eval_rows), len(eval_keys), column, len(train_rows),
             len(set(keys)) - len(eval_keys))
    train = table.select(train_rows).shuffle(seed=adapter.seed)
    held_out = table.select(eval_rows).shuffle(seed=adapter.seed)
    return PreferenceData(train, held_out, adapter.dataset, dropped, examples, split_by=column)


def _split_column(adapter: DataAdapter, columns: list[str]) -> str | None:
    """The column whose groups are held out whole: ``split_by`` resolved against the raw columns."""
    name = adapter.split_by
    if name is None or name.lower() in ("none", "null"):
        return None
    if name == AUTO:
        return "group" if "group" in columns else "prompt"
    if name not in columns and name != "prompt":
        raise DataError(f"{adapter.dataset}: data.split_by={name!r} is not a column; found {columns}. "
                        "Name one of them, use auto, or null to split by row.")
    return name


def _group_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _held_out_groups(adapter: DataAdapter, keys: list[str], n_eval: int, column: str) -> set[str]:
    """Whole groups for eval: the unique keys sorted, shuffled with ``seed``, taken in that order until the
    eval pairs reach ``n_eval`` (the group that reaches or passes it is the last one taken); at least one
    group always stays in train."""
    sizes = Counter(keys)
    if len(sizes) < 2:
        raise DataError(
            f"{adapter.dataset}: {len(keys)} pair(s) in {len(sizes)} group(s) of {column!r}: too small to hold out "
            "whole groups for eval. Lower data.eval_fraction to 0 (no eval split) or set data.split_by null "
            "(a random row split, whose eval rows may repeat train content)."
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
