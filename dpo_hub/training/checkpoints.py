"""Checkpoints a run resumes from: ``OUTPUT_DIR.checkpoints/``, beside the output folder, until the run finishes.

The folder records the fingerprint of the recipe that wrote it: a different recipe is refused, never
mixed in. trl/transformers write each ``checkpoint-N``; once a checkpoint is fully written a marker with
the sha256 of every file is added, so a checkpoint cut short by a kill, or damaged later, is skipped for
the previous one. Ctrl-C asks for a checkpoint at the end of the current step and a clean stop.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpo_hub.artifacts.folders import sha256
from dpo_hub.errors import RecipeError

log = logging.getLogger("dpo_hub")
MARKER = "dpo_hub_complete.json"
RECIPE_FILE = "recipe_fingerprint.txt"
EVAL_BEFORE = "eval_before.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def folder_for(output_dir: Path) -> Path:
    return output_dir.parent / f"{output_dir.name}.checkpoints"


def prepare(folder: Path, fingerprint: str, resume: str) -> Path | None:
    """Make ``folder`` this recipe's checkpoint folder; return the checkpoint to resume from, if any.

    ``resume``: ``auto`` (the newest complete checkpoint), ``never`` (discard them all) or a checkpoint path.
    """
    if resume == "never":
        shutil.rmtree(folder, ignore_errors=True)
    recorded = (folder / RECIPE_FILE).read_text().strip() if (folder / RECIPE_FILE).is_file() else None
    if recorded and recorded != fingerprint:
        raise RecipeError(
            f"{folder} holds checkpoints of recipe {recorded}, but this recipe is {fingerprint}; nothing was changed. "
            "Rerun the recipe that wrote them to resume, pass --resume never to discard them, or use another --output_dir."
        )
    if resume not in ("auto", "never"):
        problem = _problem(Path(resume))
        if problem:
            raise RecipeError(
                f"resume={resume}: cannot resume from it ({problem}); use --resume auto or never"
            )
        return Path(resume)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECIPE_FILE).write_text(fingerprint + "\n")
    return newest_complete(folder) if resume == "auto" else None


def newest_complete(folder: Path) -> Path | None:
    """The newest checkpoint whose files are all there and intact; broken ones are named in the log."""
    found = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()
    )
    for _, path in reversed(found):
        problem = _problem(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s; trying the previous one", path.name, problem)
    return None


def _problem(path: Path) -> str | None:
    if not path.is_dir():
        return "no such folder"
    if not (path / MARKER).is_file():
        return "incomplete: the run stopped while writing it"
    try:
        expected = json.loads((path / MARKER).read_text())["sha256"]
    except (ValueError, KeyError) as err:
        return f"unreadable marker ({err})"
    for name, digest in expected.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256(path / name) != digest:
            return f"{name} is damaged (its sha256 changed since it was written)"
    return None


def load_eval_before(folder: Path) -> dict | None:
    path = folder / EVAL_BEFORE
    return json.loads(path.read_text()) if path.is_file() else None


def save_eval_before(folder: Path, metrics: dict) -> None:
    (folder / EVAL_BEFORE).write_text(json.dumps(metrics))


class Checkpointing(TrainerCallback):
    """Marks finished checkpoints, checkpoints the last step, and turns Ctrl-C into checkpoint + stop."""

    def __init__(self) -> None:
        self.interrupted = False
        self.stopped_at: int | None = None

    def install_signal_handler(self) -> None:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)

            def handler(signum: int, frame: Any) -> None:
                if self.interrupted:  # a second Ctrl-C: stop now, the usual way
                    signal.signal(signal.SIGINT, previous)
                    raise KeyboardInterrupt
                self.interrupted = True

            signal.signal(signal.SIGINT, handler)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        stop = _any_rank(self.interrupted)
        if (
            stop or state.global_step >= state.max_steps
        ):  # the last step too: a rerun after a late failure skips training
            control.should_save = args.save_strategy != "no"
        if stop:
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            files = {p.name: sha256(p) for p in sorted(path.iterdir()) if p.is_file() and p.name != MARKER}
            tmp = path / (MARKER + ".tmp")
            tmp.write_text(json.dumps({"step": state.global_step, "sha256": files}, indent=1))
            os.replace(tmp, path / MARKER)
        return control


def _any_rank(flag: bool) -> bool:
    """True on every rank if any rank was interrupted (ranks must stop at the same step)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value)
    return bool(value.item())
