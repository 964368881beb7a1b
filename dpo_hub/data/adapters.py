"""Dataset adapters: any preference source -> ``prompt``/``chosen``/``rejected`` text, split with a seed.

Each adapter is plain typed data (it round-trips through a recipe's YAML under ``data:`` with its
``kind``); ``prepare(adapter, tokenizer)`` loads, converts, drops rows that cannot train (logging a
count and one example per reason) and splits train/eval.

The eval split holds out whole groups (``split_by``): rows that share a value of that column (by
default the source's ``group`` column, else the prompt) all land on the same side, so eval measures
generalisation to unseen questions rather than recall of rows whose twins were trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dpo_hub.config.values import check, check_choice
from dpo_hub.data.files import load_rows
from dpo_hub.data.pairs import (
    Drop,
    Pair,
    chat_answer,
    chat_pair,
    chat_prompt,
    format_prompt,
    last_reply,
    split_transcript,
    text_field,
    transcript_messages,
)
from dpo_hub.data.splits import group_key, held_out_groups, split_column
from dpo_hub.errors import DataError
from dpo_hub.plugins import ADAPTERS_GROUP, Registry
from dpo_hub.sources.models import AUTO, DEFAULT_DATASET

log = logging.getLogger("dpo_hub")
FORMATS = ("text", "chat")
MIN_TRAIN_PAIRS = 2


@dataclass(frozen=True)
class Selection:
    """Which rows to read and how to split them: the base of every adapter, a plugin's included.

    A subclass is a frozen dataclass with a ``kind`` (its ``data.kind`` name), ``columns`` (the raw
    columns it needs), a ``dataset`` field and ``to_pair(row, tokenizer)`` -> prompt/chosen/rejected text
    (raise ``pair_text.Drop`` for a row that cannot train).
    """

    columns: ClassVar[tuple[str, ...]] = ()
    split: str = field(default="train", metadata={"help": "Split of the source to read."})
    limit: int | None = field(
        default=2000, metadata={"help": "First N rows used (>= 1; the tutorial used 50); None: all."}
    )
    eval_fraction: float = field(
        default=0.15, metadata={"help": "Share held out for evaluation, in [0, 1); 0: none."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the train/eval split."})
    split_by: str | None = field(
        default=AUTO,
        metadata={
            "help": "Column whose equal values stay on one side of the train/eval split (e.g. a question "
            "id); auto: the source's `group` column when it has one (the embedded sample's template family), "
            "else `prompt`; null: split by row."
        },
    )

    def __post_init__(self) -> None:
        check(
            "data.split",
            self.split,
            isinstance(self.split, str) and bool(self.split.strip()),
            "a split name",
            "train is usual",
        )
        check(
            "data.limit", self.limit, self.limit is None or self.limit >= 1, ">= 1 or null", "null: every row"
        )
        check(
            "data.eval_fraction",
            self.eval_fraction,
            0 <= self.eval_fraction < 1,
            "in [0, 1)",
            "the share held out for evaluation; 0.1 is usual, 0 for none",
        )


@dataclass(frozen=True)
class _Format:
    format: str = field(
        default="text",
        metadata={
            "help": "text: prompt + separator + answer; chat: the tokenizer's chat template (message lists, "
            "or a plain prompt as one user turn), used alike in training, scoring and generation."
        },
    )
    separator: str = field(
        default="\n",
        metadata={"help": "Text format: what joins prompt and answer (training, scoring, generation)."},
    )

    def __post_init__(self) -> None:
        check_choice("data.format", self.format, FORMATS)
        check(
            "data.separator",
            self.separator,
            isinstance(self.separator, str),
            "text",
            "e.g. a newline; '' for none",
        )

    def prompt_text(self, prompt: Any, tokenizer: Any) -> str:
        """A generation prompt formatted exactly as the training prompts were."""
        return format_prompt(prompt, tokenizer, self.format, self.separator)


@dataclass(frozen=True)
class UltraFeedback(_Format, Selection):
    """UltraFeedback-binarized rows (argilla schema): ``prompt``, ``chosen``/``rejected`` message lists."""

    kind: ClassVar[str] = "ultrafeedback"
    columns: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")
    dataset: str = field(
        default=AUTO,
        metadata={
            "help": f"Hub id or local file; auto: {DEFAULT_DATASET}, the bundled sample offline; embedded."
        },
    )

    def __post_init__(self) -> None:
        Selection.__post_init__(self)
        _Format.__post_init__(self)

    @classmethod
    def tutorial(cls, dataset: str = AUTO) -> UltraFeedback:
        """The tutorial's selection: the first 50 rows as plain text, 90/10 train/eval."""
        return cls(dataset=dataset, limit=50, eval_fraction=0.1)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        if self.format == "chat":
            return chat_pair(row["chosen"], row["rejected"], tokenizer)
        return {
            "prompt": text_field(row["prompt"], "prompt") + self.separator,
            "chosen": last_reply(row["chosen"], "chosen"),
            "rejected": last_reply(row["rejected"], "rejected"),
        }


@dataclass(frozen=True)
class HHRLHF(Selection):
    """Anthropic HH-RLHF transcripts, split at the last ``Assistant:`` turn."""

    kind: ClassVar[str] = "hh_rlhf"
    columns: ClassVar[tuple[str, ...]] = ("chosen", "rejected")
    dataset: str = field(default="Anthropic/hh-rlhf", metadata={"help": "Hub id or local file."})
    format: str = field(
        default="text",
        metadata={
            "help": "text: the transcript as written; chat: its turns in the tokenizer's chat template."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("data.format", self.format, FORMATS)

    def prompt_text(self, prompt: Any, tokenizer: Any) -> str:
        """A generation prompt formatted exactly as the training prompts were."""
        return (
            chat_prompt(prompt, tokenizer) if self.format == "chat" else f"\n\nHuman: {prompt}\n\nAssistant:"
        )

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        if self.format == "chat":
            return chat_pair(
                transcript_messages(row["chosen"], "chosen"),
                transcript_messages(row["rejected"], "rejected"),
                tokenizer,
            )
        prompt, chosen = split_transcript(row["chosen"], "chosen")
        rejected_prompt, rejected = split_transcript(row["rejected"], "rejected")
        if prompt != rejected_prompt:
            raise Drop("chosen and rejected transcripts differ before the last Assistant turn")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@dataclass(frozen=True)
class Preferences(_Format, Selection):
    """Any Hub dataset or local JSON/JSONL/CSV/Parquet file, with a column mapping."""

    kind: ClassVar[str] = "preferences"
    limit: int | None = field(default=None, metadata={"help": "First N rows used (>= 1); None: all."})
    dataset: str = field(
        default="", metadata={"help": "Hub id or path to a .json/.jsonl/.csv/.parquet file."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    chosen_column: str = field(default="chosen", metadata={"help": "Column holding the preferred answer."})
    rejected_column: str = field(default="rejected", metadata={"help": "Column holding the other answer."})

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.prompt_column, self.chosen_column, self.rejected_column)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        prompt, chosen, rejected = (row[c] for c in self.columns)
        if self.format == "chat" and _is_conversation(chosen) and _is_conversation(rejected):
            return chat_pair(chosen, rejected, tokenizer)  # whole conversations, the prompt turns included
        answers = [last_reply(chosen, self.chosen_column), last_reply(rejected, self.rejected_column)]
        if self.format == "chat":
            turns = prompt if isinstance(prompt, list) else text_field(prompt, self.prompt_column)
            for message in turns if isinstance(turns, list) else []:
                text_field(
                    message.get("content") if isinstance(message, dict) else message, self.prompt_column
                )
            return {
                "prompt": chat_prompt(turns, tokenizer),
                "chosen": chat_answer(answers[0], tokenizer),
                "rejected": chat_answer(answers[1], tokenizer),
            }
        return {
            "prompt": text_field(prompt, self.prompt_column) + self.separator,
            "chosen": answers[0],
            "rejected": answers[1],
        }

    def __post_init__(self) -> None:
        Selection.__post_init__(self)
        _Format.__post_init__(self)
        for name in ("prompt_column", "chosen_column", "rejected_column"):
            check(
                f"data.{name}",
                getattr(self, name),
                bool(str(getattr(self, name)).strip()),
                "a column name",
                "the column of your file that holds it",
            )


def _is_conversation(value: Any) -> bool:
    """A message list holding a user turn (a whole conversation, not just the answer)."""
    return isinstance(value, list) and any(isinstance(m, dict) and m.get("role") == "user" for m in value)


def _check_adapter(name: str, obj: Any) -> str | None:
    """Why an entry point of ``dpo_hub.adapters`` is no usable adapter class, or None."""
    if not (isinstance(obj, type) and issubclass(obj, Selection) and dataclasses.is_dataclass(obj)):
        return f"it is {obj!r}, not a dataclass subclass of dpo_hub.data.adapters.Selection"
    if getattr(obj, "kind", None) != name:
        return f"its kind {getattr(obj, 'kind', None)!r} differs from the entry point name {name!r}"
    if "dataset" not in {f.name for f in dataclasses.fields(obj)} or not callable(
        getattr(obj, "to_pair", None)
    ):
        return "it needs a dataset field and a to_pair(row, tokenizer) method"
    return None


# data.kind -> adapter class: the built-ins, then installed plugins (entry point group dpo_hub.adapters)
ADAPTERS = Registry(
    ADAPTERS_GROUP,
    {cls.kind: cls for cls in (UltraFeedback, HHRLHF, Preferences)},
    _check_adapter,
    "data.kind",
)
DataAdapter = UltraFeedback | HHRLHF | Preferences  # or a plugin's Selection subclass


@dataclass
class PreferenceData:
    """Prepared train/eval splits and what was dropped on the way."""

    train: Any
    eval: Any
    source: str
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, dict] = field(default_factory=dict)
    split_by: str | None = None  # the column whose groups were held out whole; None: a random row split
    truncated: int = 0  # pairs longer than max_length that trl cuts to their first max_length tokens
    sources: list[dict] | None = (
        None  # a mixture's sources with their rows and shares (``dpo_hub.data.mixture``)
    )


def convert(adapter: DataAdapter, rows: Any, tokenizer: Any) -> tuple[list[Pair], Counter, dict[str, dict]]:
    """Turn raw rows into pairs; return pairs, drop counts by reason and one example row per reason."""
    pairs, _, dropped, examples = _convert(adapter, rows, tokenizer)
    return pairs, dropped, examples


def _convert(
    adapter: DataAdapter, rows: Any, tokenizer: Any
) -> tuple[list[Pair], list[int], Counter, dict[str, dict]]:
    """``convert`` plus the raw row index of each pair (to read its split column)."""
    pairs, kept, dropped, examples = [], [], Counter(), {}
    for index, row in enumerate(rows):
        try:
            pair = adapter.to_pair(row, tokenizer)
            if not all(pair[k].strip() for k in ("prompt", "chosen", "rejected")):
                raise Drop("empty text")
            if pair["chosen"].strip() == pair["rejected"].strip():
                raise Drop("chosen identical to rejected")
        except Drop as why:
            dropped[str(why)] += 1
            examples.setdefault(str(why), {"row": index, **{k: str(v)[:200] for k, v in row.items()}})
            continue
        pairs.append(pair)
        kept.append(index)
    return pairs, kept, dropped, examples


def prepare(adapter: DataAdapter, tokenizer: Any, max_length: int | None = None) -> PreferenceData:
    """Load, convert, drop and split: the data a DPO run trains and evaluates on.

    With ``max_length`` (the recipe's ``dpo.max_length``), pairs whose prompt alone fills it are dropped
    (trl would cut their whole answer) and those trl will truncate are counted and logged.
    Raises ``DataError`` when fewer than ``MIN_TRAIN_PAIRS`` pairs are left to train on.
    """
    import datasets

    rows = load_rows(adapter)
    pairs, kept, dropped, examples = _convert(adapter, rows, tokenizer)
    truncated = 0
    if max_length is not None and pairs:
        pairs, kept, truncated = _fit_length(pairs, kept, tokenizer, max_length, dropped, examples)
    for reason, count in dropped.items():
        log.warning("dropped %d row(s): %s (e.g. row %s)", count, reason, examples[reason])
    _check_enough(adapter, len(rows), len(pairs), dropped, examples)
    table = datasets.Dataset.from_list(pairs)
    n_eval = max(1, round(len(pairs) * adapter.eval_fraction)) if adapter.eval_fraction > 0 else 0
    _check_train_left(adapter, len(pairs), n_eval)
    result = PreferenceData(
        table.shuffle(seed=adapter.seed), None, adapter.dataset, dropped, examples, truncated=truncated
    )
    if n_eval == 0:
        return result
    column = split_column(adapter, rows.column_names)
    if column is None:
        split = table.train_test_split(test_size=n_eval, seed=adapter.seed)
        log.info(
            "eval split: %d of %d pairs drawn at random by row (data.split_by null)",
            len(split["test"]),
            len(pairs),
        )
        return dataclasses.replace(result, train=split["train"], eval=split["test"])
    if column in rows.column_names:
        values = rows[column]
        keys = [group_key(values[i]) for i in kept]
    else:  # ``prompt`` without a raw prompt column (e.g. HH-RLHF transcripts): the converted prompt text
        keys = [pair["prompt"] for pair in pairs]
    eval_keys = held_out_groups(adapter, keys, n_eval, column)
    is_eval = [key in eval_keys for key in keys]
    train_rows = [i for i, e in enumerate(is_eval) if not e]
    eval_rows = [i for i, e in enumerate(is_eval) if e]
    _check_train_left(adapter, len(pairs), len(eval_rows), f" in whole groups of {column!r}")
    log.info(
        "eval split: %d pairs in %d groups of %r held out (none of their values occur in train); "
        "train: %d pairs in %d groups",
        len(eval_rows),
        len(eval_keys),
        column,
        len(train_rows),
        len(set(keys)) - len(eval_keys),
    )
    train = table.select(train_rows).shuffle(seed=adapter.seed)
    held_out = table.select(eval_rows).shuffle(seed=adapter.seed)
    return dataclasses.replace(result, train=train, eval=held_out, split_by=column)


def _fit_length(
    pairs: list[Pair],
    kept: list[int],
    tokenizer: Any,
    max_length: int,
    dropped: Counter,
    examples: dict[str, dict],
) -> tuple[list[Pair], list[int], int]:
    """trl's rule (``truncation_mode="keep_start"``): prompt + answer is cut to its first ``max_length``
    tokens, and a pair whose prompt alone has ``max_length`` tokens or more is dropped. Drop those here
    (counted with the other reasons) and count the truncated ones; one log line says how many of each."""

    def lengths(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, verbose=False).input_ids]

    prompts = lengths([p["prompt"] for p in pairs])
    chosen = lengths([p["prompt"] + p["chosen"] for p in pairs])
    rejected = lengths([p["prompt"] + p["rejected"] for p in pairs])
    reason = f"prompt fills dpo.max_length={max_length} tokens (trl would cut the whole answer)"
    out, out_kept, truncated = [], [], 0
    for pair, index, n_prompt, n_chosen, n_rejected in zip(pairs, kept, prompts, chosen, rejected):
        if n_prompt >= max_length:
            dropped[reason] += 1
            examples.setdefault(
                reason, {"row": index, "prompt": pair["prompt"][:200], "prompt_tokens": n_prompt}
            )
            continue
        truncated += max(n_chosen, n_rejected) > max_length
        out.append(pair)
        out_kept.append(index)
    if truncated or dropped[reason]:
        log.warning(
            "dpo.max_length=%d: %d of %d pair(s) longer are cut to their first %d tokens and %d dropped "
            "whose prompt alone fills it (trl truncation_mode keep_start: the answer's end is cut first); "
            "raise dpo.max_length to keep them whole",
            max_length,
            truncated,
            len(pairs),
            max_length,
            dropped[reason],
        )
    else:
        log.info(
            "dpo.max_length=%d: every pair fits (the longest has %d tokens)",
            max_length,
            max(chosen + rejected),
        )
    return out, out_kept, truncated


def _check_enough(
    adapter: DataAdapter, n_rows: int, n_pairs: int, dropped: Counter, examples: dict[str, dict]
) -> None:
    """Stop when fewer than ``MIN_TRAIN_PAIRS`` pairs survived, naming each drop reason's count and a row."""
    if n_pairs >= MIN_TRAIN_PAIRS:
        return
    reasons = "; ".join(
        f"{count} {reason} (e.g. row {examples[reason]['row']})" for reason, count in dropped.most_common()
    )
    if n_pairs == 0:
        raise DataError(
            f"{adapter.dataset}: all {n_rows} rows dropped: {reasons}. Fix those rows, or map your "
            "columns with data.prompt_column/chosen_column/rejected_column (data.kind=preferences)."
        )
    raise DataError(
        f"{adapter.dataset}: only {n_pairs} usable pair(s) of {n_rows} row(s) (dropped: "
        f"{reasons or 'none'}); DPO needs at least {MIN_TRAIN_PAIRS}: add rows or raise data.limit."
    )


def _check_train_left(adapter: DataAdapter, n_pairs: int, n_eval: int, how: str = "") -> None:
    if n_pairs - n_eval < MIN_TRAIN_PAIRS:
        raise DataError(
            f"{adapter.dataset}: {n_pairs} pairs leave {n_pairs - n_eval} for training after holding out "
            f"{n_eval} for eval{how} (data.eval_fraction={adapter.eval_fraction}); lower data.eval_fraction "
            f"(0: no eval split) or add rows: training needs at least {MIN_TRAIN_PAIRS}."
        )


def prompt_formatter(data: Any, tokenizer: Any) -> Any:
    """``prompt -> text`` as ``data`` (an adapter or a mixture) formats training prompts, or None to keep
    them."""
    adapter = data.mix[0].adapter if hasattr(data, "mix") else data
    if not hasattr(adapter, "prompt_text"):
        return None
    return lambda prompt: adapter.prompt_text(prompt, tokenizer)
