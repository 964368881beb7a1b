"""Small helpers: hashing, atomic writes, timestamps and README front matter."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

# Same pattern as ``huggingface_hub.repocard.REGEX_YAML_BLOCK``.
_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob (what the Hub reports as ``oid`` / ``blobId`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def object_id(payload: Any) -> str:
    """Deterministic 40-hex id of a JSON-serialisable payload (commits, folders)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()


def now_iso() -> str:
    """UTC timestamp in the Hub's format (``2024-01-02T03:04:05.678Z``)."""
    now = time.time()
    millis = int((now % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    directory = tmp_dir or path.parent
    directory.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, payload: Any, tmp_dir: Path | None = None) -> None:
    """Atomically write ``payload`` as JSON."""
    atomic_write(path, json.dumps(payload, indent=1, sort_keys=True).encode(), tmp_dir=tmp_dir)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def split_front_matter(text: str) -> tuple[str | None, str]:
    """Return ``(yaml_text, body)`` of a README; ``yaml_text`` is ``None`` without front matter."""
    match = _YAML_BLOCK.search(text)
    if match is None:
        return None, text
    return match.group(2), text[match.end() :]


def parse_card_data(text: str) -> dict[str, Any] | None:
    """Parse README.md YAML front matter into a dict (``None`` if absent or invalid)."""
    yaml_text, _ = split_front_matter(text)
    if yaml_text is None:
        return None
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    return json.loads(json.dumps(data, default=str))  # YAML dates etc. -> JSON-safe values


def validate_card_yaml(text: str) -> tuple[list[str], list[str]]:
    """Validate README metadata like ``/api/validate-yaml``; returns ``(errors, warnings)``."""
    yaml_text, _ = split_front_matter(text)
    if yaml_text is None or not yaml_text.strip():
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in README.md metadata: {exc}".splitlines()[0]], []
    if data is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(data, dict):
        return ["README.md metadata must be a YAML mapping"], []
    errors: list[str] = []
    for key in ("license", "library_name", "pipeline_tag"):
        if key in data and data[key] is not None and not isinstance(data[key], (str, list)):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "language"):
        value = data.get(key)
        if value is not None and not isinstance(value, (str, list)):
            errors.append(f'"{key}" must be a string or a list of strings')
    return errors, []
