"""Trackers' logs inside a run: TensorBoard and trackio write to ``OUTPUT_DIR.checkpoints/`` while training
(so a resumed run appends to them) and their logs move into ``OUTPUT_DIR`` with the finished run:
TensorBoard's events to ``runs/``, trackio's local project database to ``trackio/``.

trackio runs offline here: no Space, no bucket (transformers' defaults); its folder is ``TRACKIO_DIR``,
which trackio reads once, on import, so it is set before the trainer (and so trackio) is built. A
``TRACKIO_DIR`` the user set is kept, and the logs stay there.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

TRACKIO_DIR = "TRACKIO_DIR"  # trackio's environment variable: where its project databases are written


def place_trackio(report_to: list[str], folder: Path) -> bool:
    """Point trackio at ``folder`` (before it is imported) when it is a chosen tracker and the user has not
    chosen a folder; whether dpo_hub placed it."""
    if "trackio" not in report_to or os.environ.get(TRACKIO_DIR):
        return False
    os.environ[TRACKIO_DIR] = str(folder)  # trackio creates it when it first writes
    return True


def place_logs(trainer: Any, folder: Path) -> None:
    """Point TensorBoard at ``folder`` before anything logs (else an eval before training writes to
    ./runs)."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback":
            callback.logging_dir = str(folder)


def finish_logs(trainer: Any, folder: Path, destination: Path) -> None:
    """Close TensorBoard's writer (the eval after training reopened it) and move ``folder`` to
    ``destination``."""
    for callback in trainer.callback_handler.callbacks:
        writer = getattr(callback, "tb_writer", None)
        if writer is not None:
            writer.close()
            callback.tb_writer = None
    if folder.is_dir():
        shutil.rmtree(destination, ignore_errors=True)
        shutil.move(str(folder), str(destination))


def finish_trackio(trainer: Any, folder: Path, destination: Path) -> None:
    """Finish trackio's run (the eval after training logged to it again) and move the project folder
    ``folder`` that dpo_hub placed to ``destination``."""
    trackio = sys.modules.get("trackio")  # imported by transformers' TrackioCallback when it is on
    if trackio is None or not any(
        type(c).__name__ == "TrackioCallback" for c in trainer.callback_handler.callbacks
    ):
        return
    trackio.finish()
    if os.environ.get(TRACKIO_DIR) == str(folder):
        del os.environ[TRACKIO_DIR]
        if folder.is_dir():
            shutil.rmtree(destination, ignore_errors=True)
            shutil.move(str(folder), str(destination))
