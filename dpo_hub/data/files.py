"""Reading a preference source: a Hub dataset, or a local JSON/JSONL/CSV/Parquet file checked first.

A broken file is a ``DataError`` naming the file and line (malformed JSON, non-UTF-8 bytes, empty file,
missing columns) instead of the datasets library's stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from dpo_hub import embedded
from dpo_hub.errors import DataError
from dpo_hub.sources.models import is_local


def load_rows(adapter: Any):
    """Raw rows of the adapter's source as a ``datasets.Dataset`` (limit applied)."""
    import datasets

    name = adapter.dataset
    if not name:
        raise DataError(
            f"data.dataset is empty: name a Hub dataset or a local file for data.kind={adapter.kind}"
        )
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
    if missing and name.endswith(".csv") and len(rows.column_names) == 1:
        separator = next((c for c in (";", "\t", "|") if c in rows.column_names[0]), None)
        if separator is not None:
            raise DataError(
                f"{name}: read as one column {rows.column_names[0]!r}: looks {separator!r}-separated "
                "and .csv files are read comma-separated; save it with commas (or as .jsonl)"
            )
    if missing:
        keys = (
            [
                f"data.{role}_column"
                for role, column in zip(("prompt", "chosen", "rejected"), adapter.columns)
                if column in missing
            ]
            if adapter.kind == "preferences"
            else ["data.prompt_column/chosen_column/rejected_column"]
        )
        raise DataError(
            f"{name}: missing column(s) {missing}; found {rows.column_names}. "
            f"Map your columns with {', '.join(keys)} (data.kind=preferences)."
        )
    if len(rows) == 0:
        raise DataError(f"{name}: no rows; it needs one row per preference pair")
    if adapter.limit is not None:
        rows = rows.select(range(min(adapter.limit, len(rows))))
    return rows


LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def local_path(name: str) -> str | None:
    """The absolute path (``~`` expanded, symlinks kept) of a local data file ``name``; None for a Hub id,
    ``embedded`` or ``auto``."""
    if not isinstance(name, str) or not name.strip() or name in (embedded.EMBEDDED, "auto"):
        return None
    expanded = os.path.expanduser(name)
    if not (os.path.isfile(expanded) or expanded.endswith(LOCAL_SUFFIXES)):
        return None
    return os.path.abspath(expanded)


def absolute_paths(data: Any) -> Any:
    """``data`` (an adapter or a mixture) with each local file's path absolute: a run's recipe.yaml then
    repeats it from any folder, and a relative and an absolute spelling of one file fingerprint alike."""
    if hasattr(data, "mix"):  # a mixture
        return dataclasses.replace(
            data, mix=tuple(dataclasses.replace(e, adapter=absolute_paths(e.adapter)) for e in data.mix)
        )
    path = local_path(getattr(data, "dataset", None))
    return data if path is None or path == data.dataset else dataclasses.replace(data, dataset=path)


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
        raise DataError(
            f"{path}: line {line} (byte {err.start}) is not UTF-8 text; save the file as UTF-8"
        ) from None
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
            raise DataError(
                f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
            ) from None
        _check_json_lines(path, text)
        return
    if not isinstance(document, (list, dict)):
        raise DataError(
            f"{path}: holds a JSON {type(document).__name__}; use a list of row objects or JSON lines"
        )


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
            raise DataError(
                f"{path}: line {number}, column {err.colno}: not valid JSON ({err.msg}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(value, dict):
            raise DataError(
                f"{path}: line {number} is a JSON {type(value).__name__}, not an object; "
                'each line must be one JSON object like {"prompt": ..., "chosen": ..., "rejected": ...}'
            )
