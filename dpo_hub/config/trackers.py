"""Trackers (``dpo.report_to``): the names the installed transformers supports, installed or not, and
TensorBoard's and trackio's folders.

TensorBoard logs are written to ``OUTPUT_DIR.checkpoints/runs`` while training (so a resumed run appends to
them) and moved to ``OUTPUT_DIR/runs`` with the finished run; trackio's (offline) to ``.../trackio``
likewise (``dpo_hub.training.trackers``).
"""

from __future__ import annotations

from typing import Any

from dpo_hub import upstream
from dpo_hub.errors import RecipeError

PACKAGES = {  # tracker -> what to pip install (the trackers transformers can detect as installed)
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "trackio": "trackio",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "dagshub": "dagshub",
    "dvclive": "dvclive",
    "neptune": "neptune",
    "codecarbon": "codecarbon",
    "swanlab": "swanlab",
    "azure_ml": "azureml-core",
}


def supported() -> tuple[str, ...]:
    """Every tracker name the installed transformers accepts in ``report_to`` (besides ``all`` and
    ``none``)."""
    return tuple(upstream.get(upstream.TRACKER_NAMES))


def normalize(value: Any) -> list[str]:
    """``"tensorboard,wandb"`` or a list -> checked names; ``none`` (no tracker) stands alone."""
    names = [
        n.strip() for n in (value.split(",") if isinstance(value, str) else value or ["none"]) if n.strip()
    ]
    for name in names:
        if name not in (*supported(), "all", "none"):
            raise RecipeError(
                f"dpo.report_to={name!r} is not a tracker the installed transformers supports; "
                f"use one or more of: {', '.join(supported())}, all or none"
            )
    if "none" in names and len(names) > 1:
        raise RecipeError(
            f"dpo.report_to={','.join(names)}: 'none' turns every tracker off; drop it or the others"
        )
    return names or ["none"]


def check_installed(names: list[str]) -> None:
    """Raise ``RecipeError`` saying what to ``pip install`` for a chosen tracker that is not installed."""
    available = set(upstream.get(upstream.TRACKERS_INSTALLED)())
    missing = [n for n in names if n in PACKAGES and n not in available]
    if missing:
        install = " ".join(PACKAGES[n] for n in missing)
        raise RecipeError(
            f"dpo.report_to: {', '.join(missing)} is not installed; pip install {install} "
            "(or drop it from dpo.report_to)"
        )
