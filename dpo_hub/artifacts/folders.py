"""A run's output folder: staged beside its final place and renamed into it only when complete.

A crashed run leaves ``.NAME.incomplete`` next to ``NAME``, never a folder that looks finished; an
earlier finished run in ``NAME`` is replaced only with ``overwrite_output_dir`` and only at the end; a
folder that is not a dpo_hub output (its marker files) is never replaced or deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dpo_hub.errors import OutputError, OutputExistsError

COMPLETE_MARKER = "metrics.json"  # written last inside the staging folder
log = logging.getLogger("dpo_hub")


def staging_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.incomplete"


RUN_MARKERS = (COMPLETE_MARKER, "recipe.yaml")  # the files every finished run folder has
STAGING_MARKER = ".dpo_hub_staging"  # inside a staging folder until it is moved into place


def markers_for(marker: str) -> tuple[str, ...]:
    """The files that make a folder a finished dpo_hub output: a run's two, or a merge's one marker."""
    return RUN_MARKERS if marker == COMPLETE_MARKER else (marker,)


def is_dpo_hub_output(folder: Path, markers: tuple[str, ...] = RUN_MARKERS) -> bool:
    """True if ``folder`` holds every marker file, the first a JSON object (as dpo_hub writes it)."""
    if not all((folder / m).is_file() for m in markers):
        return False
    try:
        return isinstance(json.loads((folder / markers[0]).read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def can_create_in(folder: Path) -> bool:
    """Whether a folder can really be created in ``folder`` (``os.access`` says yes to root on /proc)."""
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        probe = tempfile.mkdtemp(prefix=".dpo_hub-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def check_writable(
    output_dir: Path,
    overwrite: bool,
    option: str = "--output_dir",
    overwrite_option: str = "--overwrite_output_dir true",
    marker: str = COMPLETE_MARKER,
    kind: str = "run",
) -> None:
    """Fail before any work if ``output_dir`` cannot be written or holds something replaced without consent.

    Messages name the command's ``option`` and ``overwrite_option``; ``marker`` is the file a finished
    ``kind`` has. Only a finished dpo_hub ``kind`` (its marker files) is ever replaced: a folder holding
    anything else is refused, ``overwrite`` or not, since dpo_hub never deletes files it did not write.
    """
    name = option.lstrip("-")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(
            f"{name} {output_dir} is a file, not a folder; nothing was changed. Choose another {option}."
        )
    parent = next((p for p in output_dir.parents if p.exists()), None)
    if parent is None or not can_create_in(parent):
        raise OutputError(
            f"{name} {output_dir} cannot be created: {parent} is not a writable folder. "
            f"Choose another {option} or fix its permissions."
        )
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    markers = markers_for(marker)
    if not is_dpo_hub_output(output_dir, markers):
        raise OutputExistsError(
            f"{name} {output_dir} already holds files that are not a dpo_hub {kind} (no "
            f"{' + '.join(markers)} written by dpo_hub); nothing was changed. Choose a new or empty "
            f"{option}: {overwrite_option} replaces only a previous dpo_hub {kind}, never other files."
        )
    if not overwrite:
        raise OutputExistsError(
            f"{name} {output_dir} already holds a finished {kind}; nothing was changed. Choose another "
            f"{option} or pass {overwrite_option} to replace that {kind} once the new one has finished "
            f"(it works only for a previous dpo_hub {kind})."
        )


def fresh_staging(output_dir: Path) -> Path:
    """Empty staging folder for ``output_dir`` (leftovers of a crashed run are discarded; a folder of that
    name that dpo_hub did not make is refused, never deleted)."""
    stage = staging_dir(output_dir)
    if stage.exists():
        if not is_staging(stage):
            raise OutputError(
                f"{stage} exists but is not a staging folder dpo_hub made; nothing was changed. Move it "
                f"away or choose another output folder than {output_dir}."
            )
        log.warning("removing %s, left by an earlier run of %s that did not finish", stage, output_dir.name)
        shutil.rmtree(stage)
    try:
        stage.mkdir(parents=True)
        (stage / STAGING_MARKER).write_text("a dpo_hub output being written; removed when complete\n")
    except OSError as err:
        raise OutputError(
            f"{stage} cannot be created ({type(err).__name__}: {err.strerror or err}); choose another "
            "output folder or fix its permissions."
        ) from err
    return stage


def is_staging(stage: Path) -> bool:
    """A staging folder dpo_hub made: its marker, or (older versions) empty or holding only prepared data."""
    if (stage / STAGING_MARKER).is_file():
        return True
    return stage.is_dir() and {p.name for p in stage.iterdir()} <= {"prepared"}


def remove_staging(stage: Path) -> None:
    """Remove ``stage`` if dpo_hub made it (a failed start leaves nothing behind)."""
    if stage.is_dir() and is_staging(stage):
        shutil.rmtree(stage, ignore_errors=True)


def finalize(stage: Path, output_dir: Path, marker: str = COMPLETE_MARKER) -> Path:
    """Move the finished staging folder into place; the old output (if any) goes only after that, and only if
    it is still a dpo_hub output (``marker``'s files): anything else there is refused, never deleted."""
    markers = markers_for(marker)
    if output_dir.exists() and any(output_dir.iterdir()) and not is_dpo_hub_output(output_dir, markers):
        raise OutputExistsError(
            f"{output_dir} now holds files that are not a dpo_hub output; they were left untouched. The "
            f"finished output is in {stage}: move it into place yourself."
        )
    old = output_dir.parent / f".{output_dir.name}.replaced"
    if old.exists():
        if not is_dpo_hub_output(old, markers):
            raise OutputExistsError(
                f"{old} exists and is not a dpo_hub output; nothing was deleted. Move it away; the finished "
                f"output is in {stage}."
            )
        shutil.rmtree(old)
    (stage / STAGING_MARKER).unlink(missing_ok=True)
    readable_modes(stage)
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
