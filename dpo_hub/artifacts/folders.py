"""A run's output folder: staged beside its final place and renamed into it only when complete.

A crashed run leaves ``.NAME.incomplete`` next to ``NAME``, never a folder that looks finished; an
earlier finished run in ``NAME`` is replaced only with ``overwrite_output_dir`` and only at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from dpo_hub.errors import OutputError, OutputExistsError

COMPLETE_MARKER = "metrics.json"  # written last inside the staging folder
log = logging.getLogger("dpo_hub")


def staging_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.incomplete"


def check_writable(
    output_dir: Path,
    overwrite: bool,
    option: str = "--output_dir",
    overwrite_option: str = "--overwrite_output_dir true",
    marker: str = COMPLETE_MARKER,
    kind: str = "run",
) -> None:
    """Fail before any work if ``output_dir`` cannot be written or holds something replaced without consent.

    Messages name the command's ``option`` and ``overwrite_option``; ``marker`` is the file a finished ``kind`` has.
    """
    name = option.lstrip("-")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(
            f"{name} {output_dir} is a file, not a folder; nothing was changed. Choose another {option}."
        )
    parent = next((p for p in output_dir.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK | os.X_OK) or not parent.is_dir():
        raise OutputError(
            f"{name} {output_dir} cannot be created: {parent} is not a writable folder. "
            f"Choose another {option} or fix its permissions."
        )
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        what = f"a finished {kind}" if (output_dir / marker).exists() else "files"
        raise OutputExistsError(
            f"{name} {output_dir} already holds {what}; nothing was changed. Choose another {option} "
            f"or pass {overwrite_option} to replace it once the new {kind} has finished."
        )


def fresh_staging(output_dir: Path) -> Path:
    """Empty staging folder for ``output_dir`` (leftovers of a crashed run are discarded)."""
    stage = staging_dir(output_dir)
    if stage.exists():
        log.warning("removing %s, left by an earlier run of %s that did not finish", stage, output_dir.name)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def finalize(stage: Path, output_dir: Path) -> Path:
    """Move the finished staging folder into place; the old run (if any) goes only after that."""
    readable_modes(stage)
    old = output_dir.parent / f".{output_dir.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if output_dir.exists():
        os.replace(output_dir, old)
    os.replace(stage, output_dir)
    shutil.rmtree(old, ignore_errors=True)
    return output_dir


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def readable_modes(folder: Path) -> None:
    """Give every file 0666 and folder 0777 less the umask (0644/0755 usually): savers that write through a
    temporary file (e.g. ``adapter_model.safetensors``) leave 0600 otherwise."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def sha256(data: bytes | Path) -> str:
    """Hex sha256 of bytes or of a file (read in 1 MiB blocks)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
