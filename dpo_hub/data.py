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
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dpo_hub import embedded
from dpo_hub.errors import DataError
from dpo_hub.presets import check, check_choice
from dpo_hub.sources import AUTO, DEFAULT_DATASET, is_local

log = logging.getLogger("dpo_hub")
FORMATS = ("text", "chat")
MIN_TRAIN_PAIRS = 2
Pair = dict[str, str]


@dataclass(frozen=True)
class _Selection:
    split: str = field(default="train", metadata={"help": "Split of the source to read."})
    limit: int | None = field(default=2000, metadata={"help": "First N rows used (>= 1; the tutorial used 50); None: all."})
    eval_fraction: float = field(default=0.15, metadata={"help": "Share held out for evaluation, in [0, 1); 0: none."})
    seed: int = field(default=42, metadata={"help": "Seed of the train/eval split."})
    split_by: str | None = field(
        default=AUTO,
        metadata={"help": "Column whose equal values stay on one side of the train/eval split (e.g. a question id); "
                          "auto: the source's `group` column when it has one (the embedded sample's template family), "
                          "else `prompt`; null: split by row."},
    )

    def __post_init__(self) -> None:
        check("data.split", self.split, isinstance(self.split, str) and bool(self.split.strip()), "a split name",
              "train is usual")
        check("data.limit", self.limit, self.limit is None or self.limit >= 1, ">= 1 or null", "null: every row")
        check("data.eval_fraction", self.eval_fraction, 0 <= self.eval_fraction < 1, "in [0, 1)",
              "the share held out for evaluation; 0.1 is usual, 0 for none")


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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("data.format", self.format, FORMATS)

    @classmethod
    def tutorial(cls, dataset: str = AUTO) -> UltraFeedback:
        """The tutorial's selection: the first 50 rows as plain text, 90/10 train/eval."""
        return cls(dataset=dataset, limit=50, eval_fraction=0.1)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        if self.format == "chat":
            return _chat_pair(row["chosen"], row["rejected"], tokenizer)
        return {"prompt": _text(row["prompt"], "prompt"), "chosen": _last_reply(row["chosen"], "chosen"),
                "rejected": _last_reply(row["rejected"], "rejected")}


@dataclass(frozen=True)
class HHRLHF(_Selection):
    """Anthropic HH-RLHF transcripts, split at the last ``Assistant:`` turn."""

    kind: ClassVar[str] = "hh_rlhf"
    columns: ClassVar[tuple[str, ...]] = ("chosen", "rejected")
    dataset: str = field(default="Anthropic/hh-rlhf", metadata={"help": "Hub id or local file."})

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        prompt, chosen = _split_transcript(row["chosen"], "chosen")
        rejected_prompt, rejected = _split_transcript(row["rejected"], "rejected")
        if prompt != rejected_prompt:
            raise _Drop("chosen and rejected transcripts differ before the last Assistant turn")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@dataclass(frozen=True)
class Preferences(_Selection):
    """Any Hub dataset or local JSON/JSONL/CSV/Parquet file, with a column mapping."""

    kind: ClassVar[str] = "preferences"
    limit: int | None = field(default=None, metadata={"help": "First N rows used (>= 1); None: all."})
    dataset: str = field(default="", metadata={"help": "Hub id or path to a .json/.jsonl/.csv/.parquet file."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    chosen_column: str = field(default="chosen", metadata={"help": "Column holding the preferred answer."})
    rejected_column: str = field(default="rejected", metadata={"help": "Column holding the other answer."})

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.prompt_column, self.chosen_column, self.rejected_column)

    def to_pair(self, row: dict, tokenizer: Any) -> Pair:
        return {
            "prompt": _text(row[self.prompt_column], self.prompt_column),
            "chosen": _last_reply(row[self.chosen_column], self.chosen_column),
            "rejected": _last_reply(row[self.rejected_column], self.rejected_column),
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("prompt_column", "chosen_column", "rejected_column"):
            check(f"data.{name}", getattr(self, name), bool(str(getattr(self, name)).strip()), "a column name",
                  "the column of your file that holds it")


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
    truncated: int = 0  # pairs longer than max_length that trl cuts to their first max_length tokens


def _text(value: Any, name: str) -> str:
    """``value`` as non-empty text; a message list gives its last user turn (the prompt)."""
    if value is None:
        raise _Drop(f"{name} is missing")
    if isinstance(value, list):
        return _text(_turn(value, "user", name), name)
    if not isinstance(value, str):
        raise _Drop(f"{name} is not text ({type(value).__name__})")
    if not value.strip():
        raise _Drop(f"{name} is empty")
    return value


def _last_reply(value: Any, name: str) -> str:
    return _text(_turn(value, "assistant", name) if isinstance(value, list) else value, name)


def _turn(messages: list, role: str, name: str) -> Any:
    """The content of the last ``role`` message of ``messages``."""
    _check_messages(messages, name)
    for message in reversed(messages):
        if message["role"] == role:
            return message["content"]
    raise _Drop(f"{name} has no {role} message")


def _check_messages(messages: list, name: str) -> None:
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise _Drop(f"{name} is a list but not of {{role, content}} messages")


def _conversation(value: Any, name: str) -> list[dict]:
    """A chat-format conversation: optional system turn, then user/assistant alternating, ending with the assistant."""
    if not isinstance(value, list):
        raise _Drop(f"{name} is not a message list ({type(value).__name__}); chat format needs one")
    _check_messages(value, name)
    roles = [m["role"] for m in value]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if any(role != ("user", "assistant")[i % 2] for i, role in enumerate(body)):
        raise _Drop(f"{name}: roles do not alternate user/assistant")
    if not body or body[-1] != "assistant":
        raise _Drop(f"{name}: the conversation does not end with an assistant turn")
    for message in value:
        _text(message["content"], f"{name} {message['role']} message")
    return value


def _split_transcript(text: Any, name: str) -> tuple[str, str]:
    marker = "\n\nAssistant:"
    text = _text(text, name)
    cut = text.rfind(marker)
    if cut < 0:
        raise _Drop("no Assistant turn in transcript")
    return text[: cut + len(marker)], text[cut + len(marker):]


def _chat_pair(chosen: Any, rejected: Any, tokenizer: Any) -> Pair:
    chosen, rejected = _conversation(chosen, "chosen"), _conversation(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise _Drop("chosen and rejected conversations differ before the last turn")
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(chosen[:-1], tokenize=False, add_generation_prompt=True)
        full = [tokenizer.apply_chat_template(c, tokenize=False) for c in (chosen, rejected)]
        answers = [f[len(prompt):] if f.startswith(prompt) else c[-1]["content"] for f, c in zip(full, (chosen, rejected))]
    else:  # no template (GPT-2): a plain "Role: text" transcript
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in chosen[:-1]) + "Assistant:"
        answers = [" " + chosen[-1]["content"], " " + rejected[-1]["content"]]
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
        check_file(name)
        try:
            rows = datasets.load_dataset(builder, data_files=name, split="train")
        except FileNotFoundError as err:
            raise DataError(f"{name}: file not found; check data.dataset") from err
        except Exception as err:
            raise DataError(f"{name}: could not be read as {builder} ({str(err).splitlines()[0]})") from err
    else:
        rows = datasets.load_dataset(name, split=adapter.split)
    missing = [c for c in adapter.columns if c not in rows.column_names]
    if missing:
        keys = [f"data.{role}_column" for role, column in zip(("prompt", "chosen", "rejected"), adapter.columns)
                if column in missing] if adapter.kind == "preferences" else ["data.prompt_column/chosen_column/rejected_column"]
        raise DataError(
            f"{name}: missing column(s) {missing}; found {rows.column_names}. "
            f"Map your columns with {', '.join(keys)} (data.kind=preferences)."
        )
    if len(rows) == 0:
        raise DataError(f"{name}: no rows; it needs one row per preference pair")
    if adapter.limit is not None:
        rows = rows.select(range(min(adapter.limit, len(rows))))
    return rows


def check_file(path: str) -> None:
    """Fail naming the file and line where datasets' own error would be cryptic: missing, empty, not UTF-8,
    malformed JSON (a ``.json`` file may hold one document or, like ``.jsonl``, one object per line)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check data.dataset") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err.strerror or err})") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; it needs one row per preference pair")
    suffix = path.rsplit(".", 1)[-1]
    if suffix == "parquet":
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} (byte {err.start}) is not UTF-8 text; save the file as UTF-8") from None
    if suffix == "csv" and "\n" not in text.strip():
        raise DataError(f"{path}: no rows, only a header line; it needs one row per preference pair")
    if suffix == "jsonl":
        _check_json_lines(path, text)
    elif suffix == "json":
        _check_json(path, text)


def _check_json(path: str, text: str) -> None:
    """A ``.json`` file: one document (a list of row objects) or, like ``.jsonl``, one object per line."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("[") or not _is_object(text.strip().splitlines()[0]):
            raise DataError(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})") from None
        _check_json_lines(path, text)
        return
    if not isinstance(document, (list, dict)):
        raise DataError(f"{path}: holds a JSON {type(document).__name__}; use a list of row objects or JSON lines")


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _check_json_lines(path: str, text: str) -> None:
    """Every non-blank line must be one JSON object."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}, column {err.colno}: not valid JSON ({err.msg}); "
                            "each line must be one JSON object") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(value).__name__}, not an object; "
                            "each line must be one JSON object like {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}")


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
    result = PreferenceData(table.shuffle(seed=adapter.seed), None, adapter.dataset, dropped, examples,
                            truncated=truncated)
    if n_eval == 0:
        return result
    column = _split_column(adapter, rows.column_names)
    if column is None:
        split = table.train_test_split(test_size=n_eval, seed=adapter.seed)
        log.info("eval split: %d of %d pairs drawn at random by row (data.split_by null)", len(split["test"]), len(pairs))
        return dataclasses.replace(result, train=split["train"], eval=split["test"])
    if column in rows.column_names:
        values = rows[column]
        keys = [_group_key(values[i]) for i in kept]
    else:  # ``prompt`` without a raw prompt column (e.g. HH-RLHF transcripts): the converted prompt text
        keys = [pair["prompt"] for pair in pairs]
    eval_keys = _held_out_groups(adapter, keys, n_eval, column)
    is_eval = [key in eval_keys for key in keys]
    train_rows = [i for i, e in enumerate(is_eval) if not e]
    eval_rows = [i for i, e in enumerate(is_eval) if e]
    _check_train_left(adapter, len(pairs), len(eval_rows), f" in whole groups of {column!r}")
    log.info("eval split: %d pairs in %d groups of %r held out (none of their values occur in train); "
             "train: %d pairs in %d groups", len(eval_rows), len(eval_keys), column, len(train_rows),
             len(set(keys)) - len(eval_keys))
    train = table.select(train_rows).shuffle(seed=adapter.seed)
    held_out = table.select(eval_rows).shuffle(seed=adapter.seed)
    return dataclasses.replace(result, train=train, eval=held_out, split_by=column)


def _fit_length(pairs: list[Pair], kept: list[int], tokenizer: Any, max_length: int, dropped: Counter,
                examples: dict[str, dict]) -> tuple[list[Pair], list[int], int]:
    """trl's rule (``truncation_mode="keep_start"``): prompt + answer is cut to its first ``max_length`` tokens,
    and a pair whose prompt alone has ``max_length`` tokens or more is dropped. Drop those here (counted with
    the other reasons) and count the truncated ones; one log line says how many of each."""
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
            examples.setdefault(reason, {"row": index, "prompt": pair["prompt"][:200], "prompt_tokens": n_prompt})
            continue
        truncated += max(n_chosen, n_rejected) > max_length
        out.append(pair)
        out_kept.append(index)
    if truncated or dropped[reason]:
        log.warning("dpo.max_length=%d: %d of %d pair(s) longer are cut to their first %d tokens and %d dropped whose "
                    "prompt alone fills it (trl truncation_mode keep_start: the answer's end is cut first); raise "
                    "dpo.max_length to keep them whole", max_length, truncated, len(pairs), max_length, dropped[reason])
    else:
        log.info("dpo.max_length=%d: every pair fits (the longest has %d tokens)", max_length, max(chosen + rejected))
    return out, out_kept, truncated


def _check_enough(adapter: DataAdapter, n_rows: int, n_pairs: int, dropped: Counter, examples: dict[str, dict]) -> None:
    """Stop when fewer than ``MIN_TRAIN_PAIRS`` pairs survived, naming each drop reason's count and a row."""
    if n_pairs >= MIN_TRAIN_PAIRS:
        return
    reasons = "; ".join(f"{count} {reason} (e.g. row {examples[reason]['row']})" for reason, count in dropped.most_common())
    if n_pairs == 0:
        raise DataError(f"{adapter.dataset}: all {n_rows} rows dropped: {reasons}. Fix those rows, or map your "
                        "columns with data.prompt_column/chosen_column/rejected_column (data.kind=preferences).")
    raise DataError(f"{adapter.dataset}: only {n_pairs} usable pair(s) of {n_rows} row(s) (dropped: {reasons or 'none'}); "
                    f"DPO needs at least {MIN_TRAIN_PAIRS}: add rows or raise data.limit.")


def _check_train_left(adapter: DataAdapter, n_pairs: int, n_eval: int, how: str = "") -> None:
    if n_pairs - n_eval < MIN_TRAIN_PAIRS:
        raise DataError(
            f"{adapter.dataset}: {n_pairs} pairs leave {n_pairs - n_eval} for training after holding out {n_eval} "
            f"for eval{how} (data.eval_fraction={adapter.eval_fraction}); lower data.eval_fraction (0: no eval "
            f"split) or add rows: training needs at least {MIN_TRAIN_PAIRS}."
        )


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
