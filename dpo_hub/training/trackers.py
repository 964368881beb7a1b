"""Trackers' logs inside a run: TensorBoard writes to ``OUTPUT_DIR.checkpoints/runs`` while training (so a
resumed run appends to them) and its events move to ``OUTPUT_DIR/runs`` with the finished run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


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
