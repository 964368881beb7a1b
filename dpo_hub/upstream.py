"""Every private name of trl, transformers, accelerate and torch that dpo_hub uses, and nothing else.

A speed lever that needs one asks :func:`missing` first: when the installed version moved or renamed the
name, the lever stays off with a reason naming it and the version, which the run logs and records in
``metrics.json`` (``levers``); nothing fails and nothing is patched blindly. Module globals are changed only
inside :func:`patched` (undone when it exits), so trl used directly in the same process keeps its own
behaviour. ``tests/test_upstream.py`` probes every name against the installed versions.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any


@dataclass(frozen=True)
class Private:
    """A private name of an upstream library and the dpo_hub feature that uses it."""

    module: str
    name: str
    used_for: str

    @property
    def library(self) -> str:
        return self.module.split(".")[0]


TRL_USE_TRITON = Private(
    "trl.trainer.utils", "_use_triton", "score_completions_only: which devices project only answer positions"
)
TRL_TILE_SIZE = Private(
    "trl.trainer.utils", "_CHUNKED_LOGPROB_CHUNK_SIZE", "smaller_logit_tiles: vocabulary tile width"
)
TRL_FORWARD_TILE = Private(
    "trl.kernels.chunked_logprob", "_forward_tile", "lean_tile_folds: the forward fold of a tile"
)
TRL_BACKWARD_TILE = Private(
    "trl.kernels.chunked_logprob", "_backward_tile", "lean_tile_folds: the backward fold"
)
TRL_STEP_METRICS = Private(
    "trl.trainer.dpo_trainer", "DPOTrainer._metrics", "plan: the timed warm-up's metrics are dropped"
)
TRL_TOKEN_COUNT = Private(
    "trl.trainer.dpo_trainer",
    "DPOTrainer._total_train_tokens",
    "plan: the timed warm-up's tokens are not counted; resume: the count continues",
)
TRACKER_NAMES = Private(
    "transformers.integrations.integration_utils",
    "INTEGRATION_TO_CALLBACK",
    "dpo.report_to: the tracker names transformers accepts",
)
TRACKERS_INSTALLED = Private(
    "transformers.integrations.integration_utils",
    "get_available_reporting_integrations",
    "dpo.report_to: which trackers are installed",
)
ACCELERATE_LAUNCH_PARSER = Private(
    "accelerate.commands.launch",
    "launch_command_parser",
    "accelerate configs: the --config_file of the launching command",
)
ACCELERATE_LAUNCH_COMMAND = Private(
    "accelerate.commands.launch",
    "launch_command",
    "dpo-hub launch: accelerate's own launchers, run in dpo_hub's process",
)
ACCELERATE_DEFAULT_CONFIG = Private(
    "accelerate.commands.config", "default_config_file", "accelerate configs: the default config file"
)
ACCELERATE_VALIDATE_LAUNCH = Private(
    "accelerate.commands.launch",
    "_validate_launch_command",
    "launch checks: what an accelerate launch command line and its config file ask for",
)
ACCELERATE_PREPARED_MODELS = Private(
    "accelerate.accelerator",
    "Accelerator._models",
    "DDP after an eval before training: a model prepared for evaluation only is wrapped for training",
)
TORCH_DEFAULT_STORE = Private(
    "torch.distributed.distributed_c10d",
    "_get_default_store",
    "on_main: the main process's result or error reaches the other ranks through the process group's store",
)
ALL = (
    TRL_USE_TRITON,
    TRL_TILE_SIZE,
    TRL_FORWARD_TILE,
    TRL_BACKWARD_TILE,
    TRL_STEP_METRICS,
    TRL_TOKEN_COUNT,
    TRACKER_NAMES,
    TRACKERS_INSTALLED,
    ACCELERATE_LAUNCH_PARSER,
    ACCELERATE_LAUNCH_COMMAND,
    ACCELERATE_DEFAULT_CONFIG,
    ACCELERATE_VALIDATE_LAUNCH,
    ACCELERATE_PREPARED_MODELS,
    TORCH_DEFAULT_STORE,
)


def get(private: Private) -> Any:
    """The object behind ``private`` (for ``Class.attr`` names on instances, the class attribute may not
    exist: use :func:`missing` on an instance instead); ``AttributeError``/``ImportError`` when it moved."""
    owner: Any = importlib.import_module(private.module)
    for part in private.name.split("."):
        owner = getattr(owner, part)
    return owner


def missing(*privates: Private, instance: Any = None) -> str | None:
    """Why the names cannot be used with the installed libraries (naming them and the versions), or None."""
    gone = []
    for private in privates:
        try:
            if instance is not None and "." in private.name:
                getattr(instance, private.name.rsplit(".", 1)[1])
            else:
                get(private)
        except (ImportError, AttributeError):
            gone.append(private)
    if not gone:
        return None
    names = ", ".join(f"{p.module}.{p.name}" for p in gone)
    versions = ", ".join(sorted({f"{p.library} {_version(p.library)}" for p in gone}))
    return f"{names} not found in the installed {versions} (dpo_hub relies on it for {gone[0].used_for})"


def _version(library: str) -> str:
    try:
        return version(library)
    except Exception:
        return "(not installed)"


@contextlib.contextmanager
def patched(private: Private, value: Any) -> Iterator[Any]:
    """Set the module global ``private`` to ``value`` for the ``with`` block, then restore trl's own."""
    module = importlib.import_module(private.module)
    original = getattr(module, private.name)
    setattr(module, private.name, value)
    try:
        yield original
    finally:
        setattr(module, private.name, original)


def forget_step(trainer: Any, tokens_before: int) -> None:
    """Drop the metrics and the token count of a step that was not a training step (the plan's warm-up)."""
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = tokens_before


def continue_token_count(trainer: Any, tokens: int) -> None:
    """Start trl's training-token count at ``tokens``: a resumed run continues its checkpoint's count."""
    trainer._total_train_tokens = tokens


def tokens_counted(trainer: Any) -> int:
    """Training tokens trl has counted so far."""
    return getattr(trainer, "_total_train_tokens", 0)


def forget_evaluation_prepare(accelerator: Any, model: Any) -> bool:
    """Undo accelerate's record that ``model`` is prepared; returns whether there was one.

    transformers' ``Trainer.evaluate`` before ``train`` prepares the model in evaluation mode (no DDP wrapper)
    and accelerate marks it prepared (``model._is_accelerate_prepared``, ``Accelerator._models``); the
    training ``prepare`` then returns it unwrapped, so gradients are never all-reduced and the ranks drift
    apart (accelerate 1.16, transformers 5.25). Forgetting the mark lets training wrap it in DDP.
    """
    if not getattr(model, "_is_accelerate_prepared", False):
        return False
    model._is_accelerate_prepared = False
    accelerator._models[:] = [m for m in accelerator._models if m is not model]
    return True
