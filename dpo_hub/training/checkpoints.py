"""Checkpoints a run resumes from: ``OUTPUT_DIR.checkpoints/``, beside the output folder, until the run
finishes.

The folder records the fingerprint of the recipe that wrote it and a digest of the prepared pairs: a
different recipe or changed data is refused, never mixed in. trl/transformers write each
``checkpoint-N``; once a checkpoint is fully written a marker with the sha256 of every file is added, so
a checkpoint cut short by a kill, or damaged later, is skipped for the previous one. Ctrl-C asks for a
checkpoint at the end of the current step and a clean stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpo_hub import upstream
from dpo_hub.artifacts.folders import readable_modes, sha256
from dpo_hub.errors import DataError, OutputError, RecipeError

log = logging.getLogger("dpo_hub")
MARKER = "dpo_hub_complete.json"
RECIPE_FILE = "recipe_fingerprint.txt"
EVAL_BEFORE = "eval_before.json"
DATA_FILE = "data_fingerprint.json"  # what the checkpoints were trained on
PRECISION_FILE = "precision.json"  # what the first start's precision: auto resolved to; a resume keeps it
TOTALS = "dpo_hub_totals.json"  # in each checkpoint: the run's totals up to it (RunTotals)
TRAINER_FILES = ("README.md", "training_args.bin")  # what trl writes beside the checkpoints
_STEP = re.compile(r"^checkpoint-(\d+)$")


def folder_for(output_dir: Path) -> Path:
    return output_dir.parent / f"{output_dir.name}.checkpoints"


def check(folder: Path, fingerprint: str, resume: str) -> Path | None:
    """The checkpoint to resume from, if any; refuses what cannot be used. Changes nothing on disk.

    ``resume``: ``auto`` (the newest complete checkpoint), ``never`` (discard them all) or a checkpoint path.
    A fingerprint lock without any checkpoint (left by a run that failed before its first save) never blocks.
    """
    if folder.exists() and not is_ours(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise RecipeError(
            f"{folder} exists but is not a dpo_hub checkpoints folder ({RECIPE_FILE} is missing); nothing "
            "was changed. Move it away or use another --output_dir: dpo_hub never deletes files it did not "
            "write."
        )
    if resume == "never":
        return None
    recorded = (folder / RECIPE_FILE).read_text().strip() if (folder / RECIPE_FILE).is_file() else None
    if recorded and recorded != fingerprint and has_checkpoints(folder):
        raise RecipeError(
            f"{folder} holds checkpoints of recipe {recorded}, but this recipe is {fingerprint}; nothing was "
            "changed. Rerun the recipe that wrote them to resume, pass --resume never to discard them, or "
            "use another --output_dir."
        )
    if resume != "auto":
        problem = _problem(Path(resume))
        if problem:
            raise RecipeError(
                f"resume={resume}: cannot resume from it ({problem}); use --resume auto or never"
            )
        return Path(resume)
    if recorded != fingerprint or not folder.is_dir():
        return None
    return newest_complete(folder)


def prepare(folder: Path, fingerprint: str, resume: str, data: dict | None = None) -> Path | None:
    """``check``, then make ``folder`` this recipe's checkpoint folder (recording the fingerprint and the
    prepared ``data``'s digest); return the checkpoint to resume from, if any. Call it after the last check
    that can fail without training: a lock it leaves without checkpoints is dropped by the next run."""
    resume_from = check(folder, fingerprint, resume)
    recorded = (folder / RECIPE_FILE).read_text().strip() if (folder / RECIPE_FILE).is_file() else None
    if resume == "never" or (recorded and recorded != fingerprint):
        discard(folder)  # never: on request; another recipe's lock: it has no checkpoints (check said so)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECIPE_FILE).write_text(fingerprint + "\n")
        if data is not None and not (resume_from and (folder / DATA_FILE).is_file()):
            (folder / DATA_FILE).write_text(json.dumps(data, indent=1) + "\n")
    except OSError as err:
        raise OutputError(
            f"{folder} cannot be written ({type(err).__name__}: {err.strerror or err}); choose another "
            "--output_dir or fix its permissions."
        ) from err
    return resume_from


def is_ours(folder: Path) -> bool:
    return (folder / RECIPE_FILE).is_file()


def has_checkpoints(folder: Path) -> bool:
    return folder.is_dir() and any(_STEP.match(p.name) and p.is_dir() for p in folder.iterdir())


def discard(folder: Path) -> None:
    """Remove what dpo_hub writes in a checkpoints folder (checkpoints, lock, records, TensorBoard and trackio
    logs), then the folder if that emptied it; anything else is left where it is."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_dir() and (_STEP.match(path.name) or path.name in ("runs", "trackio")):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name in (RECIPE_FILE, EVAL_BEFORE, DATA_FILE, PRECISION_FILE, *TRAINER_FILES):
            path.unlink(missing_ok=True)
    if any(folder.iterdir()):
        log.warning("kept %s: it holds files dpo_hub did not write", folder)
    else:
        folder.rmdir()


def data_digest(data: Any) -> dict:
    """What the checkpoints were trained on: pair counts and a sha256 of the prepared pairs' content."""
    digest = hashlib.sha256()
    for name, split in (("train", data.train), ("eval", data.eval)):
        digest.update(f"[{name}]\n".encode())
        for row in split if split is not None else ():
            digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
    return {
        "sha256": digest.hexdigest(),
        "train_pairs": len(data.train),
        "eval_pairs": len(data.eval) if data.eval is not None else 0,
    }


def check_data(resume_from: Path | None, data: dict) -> None:
    """Refuse to resume ``resume_from`` if the prepared pairs differ from those its checkpoints were trained
    on."""
    if resume_from is None or not (resume_from.parent / DATA_FILE).is_file():
        return
    try:
        recorded = json.loads((resume_from.parent / DATA_FILE).read_text())
    except ValueError:
        return
    if recorded.get("sha256") == data["sha256"]:
        return
    counts = [
        f"{recorded.get(k, '?')} {k.split('_')[0]} pairs before, {data[k]} now"
        for k in ("train_pairs", "eval_pairs")
    ]
    same = all(recorded.get(k) == data[k] for k in ("train_pairs", "eval_pairs"))
    raise DataError(
        f"data changed since the checkpoints in {resume_from.parent} were written: {'; '.join(counts)}"
        f"{' (same counts, different content)' if same else ''}; nothing was changed. Restore the data to "
        "resume, or rerun with --resume never (discards the checkpoints) or a new --output_dir."
    )


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


def load_precision(folder: Path) -> dict | None:
    """The precision the run's first start resolved (``metrics.json``'s ``precision``), or None."""
    path = folder / PRECISION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_precision(folder: Path, precision: dict) -> None:
    if not (folder / PRECISION_FILE).is_file():  # the first start's answer stands
        (folder / PRECISION_FILE).write_text(json.dumps(precision))


class RunTotals:
    """A run's totals over all its starts: steps, training tokens, the summed train loss and the training
    time up to each checkpoint are saved in it, and a resume continues them (trl and transformers count from
    zero at every start)."""

    def __init__(self, trainer: Any, resume_from: Path | None) -> None:
        saved = resume_from / TOTALS if resume_from else None
        prior = json.loads(saved.read_text()) if saved and saved.is_file() else {}
        self.trainer = trainer
        self.resumed_at = int(prior.get("global_step", 0))
        self.tokens = int(prior.get("tokens_seen", 0))
        self.loss_sum = float(prior.get("train_loss_sum", 0.0))
        self.runtime = float(prior.get("train_runtime", 0.0))
        self.started = time.time()

    def begin(self) -> None:
        """At the start of training, on every rank: continue the counts of the checkpoint resumed."""
        self.started = time.time()
        self.trainer.train_loss_sum = self.loss_sum
        if self.tokens and upstream.missing(upstream.TRL_TOKEN_COUNT, instance=self.trainer) is None:
            upstream.continue_token_count(self.trainer, self.tokens)

    def save(self, checkpoint: Path, step: int) -> None:
        totals = {
            "global_step": step,
            "tokens_seen": upstream.tokens_counted(self.trainer),
            "train_loss_sum": float(getattr(self.trainer, "train_loss_sum", 0.0)),  # the one device sync
            "train_runtime": round(self.runtime + time.time() - self.started, 4),
        }
        (checkpoint / TOTALS).write_text(json.dumps(totals, indent=1))

    def tokens_seen(self) -> int:
        """Training tokens over the whole run (trl's count continues the checkpoint's)."""
        return max(upstream.tokens_counted(self.trainer), self.tokens)

    def whole_run(self, metrics: dict, global_step: int) -> dict:
        """transformers' train metrics (of the last start only) as totals over the whole run."""
        if not self.resumed_at:
            return metrics
        steps = global_step - self.resumed_at  # trained in this start
        runtime = self.runtime + float(metrics.get("train_runtime", 0.0))
        out = {
            **metrics,
            "train_runtime": round(runtime, 4),
            "train_loss": (self.loss_sum + float(metrics.get("train_loss", 0.0)) * steps)
            / max(global_step, 1),
            "train_steps_per_second": round(global_step / runtime, 3) if runtime else None,
            "resumed_at_step": self.resumed_at,
        }
        if steps and metrics.get("train_samples_per_second") is not None and runtime:
            per_step = metrics["train_samples_per_second"] * metrics["train_runtime"] / steps
            out["train_samples_per_second"] = round(per_step * global_step / runtime, 3)
        else:
            out.pop("train_samples_per_second", None)
        return out


def is_final(checkpoint: Path) -> bool:
    """True when ``checkpoint`` is of the run's last step (resuming it must not train another step)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def restore_final(trainer: Any, checkpoint: Path) -> Any:
    """Load the adapter and trainer state of the run's last checkpoint instead of training (transformers would
    train one step more); returns the ``TrainOutput`` of a start that trained nothing."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    set_peft_model_state_dict(trainer.model, load_file(str(checkpoint / "adapter_model.safetensors")))
    log.info("%s is the run's last step: nothing left to train", checkpoint.name)
    return TrainOutput(trainer.state.global_step, 0.0, {"train_runtime": 0.0, "train_loss": 0.0})


class Checkpointing(TrainerCallback):
    """Marks finished checkpoints, checkpoints the last step, and turns Ctrl-C into checkpoint + stop."""

    def __init__(self, totals: RunTotals | None = None) -> None:
        self.totals = totals
        self.interrupted = False
        self.stopped_at: int | None = None
        self.in_loop = False  # between on_train_begin and on_train_end: a signal waits for the step's end

    def install_signal_handler(self) -> None:
        """Ctrl-C (SIGINT) and SIGTERM in the training loop: checkpoint at the end of the step, then stop.

        ``accelerate launch`` answers Ctrl-C by sending its worker SIGTERM (and SIGKILL 5 s later), so both
        signals mean the same. A second Ctrl-C, or either signal outside the loop (loading, evaluating,
        writing), raises ``KeyboardInterrupt`` at once: there is no step to finish.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        sigints, stopping = [], []

        def handler(signum: int, frame: Any) -> None:
            sigints.extend([signum] if signum == signal.SIGINT else [])
            if self.interrupted or stopping:  # a stop is under way: only a second Ctrl-C hurries it
                if len(sigints) > 1:
                    raise KeyboardInterrupt
                return
            if self.in_loop:
                self.interrupted = True
                return
            stopping.append(signum)
            raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.in_loop = True
        if self.totals is not None:
            self.totals.begin()
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.in_loop = False
        return control

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

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.stopped_at is not None:  # stopped by a signal: saved at the step's end; no epoch-end eval
            control.should_evaluate = control.should_save = False
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if self.totals is not None:
                self.totals.save(path, state.global_step)
            readable_modes(path)  # savers writing through a temporary file leave 0600
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
