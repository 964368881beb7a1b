"""trl's DPO loss types: which the installed trl implements, and where each starts (its zero-margin value).

A run may combine several losses with weights (``dpo.loss_type: [sigmoid, sft]``, ``dpo.loss_weights``);
``untrained_loss`` and ``describe_losses`` take one loss or such a combination.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Sequence

# trl 1.x's losses; ``trl_loss_types()`` reads the installed trl's own list when it can.
KNOWN_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@functools.cache
def trl_loss_types() -> tuple[str, ...]:
    """The loss types the installed trl's ``DPOTrainer`` implements (``DPOConfig`` accepts any string).

    Read from the branches of the trainer's loss code; falls back to trl 1.x's list if that code moved.
    """
    from trl import DPOTrainer

    try:
        source = inspect.getsource(DPOTrainer)
    except (OSError, TypeError):
        return KNOWN_LOSS_TYPES
    found = tuple(dict.fromkeys(re.findall(r'loss_type == "([a-z_]+)"', source)))
    return found if "sigmoid" in found else KNOWN_LOSS_TYPES


# trl 1.x's losses that read ``label_smoothing``; ``label_smoothing_losses()`` reads the installed trl.
KNOWN_SMOOTHED = ("exo_pair", "robust", "aot", "aot_unpaired")


@functools.cache
def label_smoothing_losses() -> tuple[str, ...]:
    """The loss types whose code in the installed trl reads ``label_smoothing`` (the others ignore it)."""
    from trl import DPOTrainer

    try:
        source = inspect.getsource(DPOTrainer)
    except (OSError, TypeError):
        return KNOWN_SMOOTHED
    branches = re.split(r'\n\s*(?:el)?if loss_type == "', source)[1:]
    found = tuple(b.split('"', 1)[0] for b in branches if "label_smoothing" in b.split("\n\n        ")[0])
    return found or KNOWN_SMOOTHED


def untrained_loss(
    loss_type: str | Sequence[str],
    beta: float,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
    weights: Sequence[float] | None = None,
) -> float | None:
    """The loss when policy and reference agree (every log-ratio 0), i.e. at step 0 of a LoRA run.

    ``None`` where it depends on the model (``sft``, the chosen answers' NLL) or is unknown. Several losses:
    their weighted sum (weights default to 1.0, as in trl), ``None`` if any part is.
    Used for the reference line of the loss plot; the values follow each loss's paper at zero margin.
    """
    if not isinstance(loss_type, str) or weights is not None:
        loss_type = (loss_type,) if isinstance(loss_type, str) else loss_type
        parts = [untrained_loss(name, beta, label_smoothing, discopop_tau) for name in loss_type]
        if any(p is None for p in parts):
            return None
        return sum(w * p for w, p in zip(weights or [1.0] * len(parts), parts, strict=True))
    half = math.log(2)  # -log sigmoid(0)
    eps = label_smoothing
    values = {
        "sigmoid": half,
        "robust": half,
        "aot": half,
        "aot_unpaired": half,
        "sigmoid_norm": half,
        "hinge": 1.0,
        "apo_zero": 1.0,
        "apo_down": 1.0,
        "ipo": (1 / (2 * beta)) ** 2,
        "sppo_hard": 2 * (0.5 / beta) ** 2,
        "nca_pair": 2 * half,
        "bco_pair": 2 * half,
        "discopop": (half + 1.0) / 2,
        "exo_pair": (0.5 * (math.log(0.5) - math.log1p(-eps)) + 0.5 * (math.log(0.5) - math.log(eps)))
        if eps > 0
        else None,
    }
    return values.get(loss_type)


def describe_losses(loss_type: str | Sequence[str], weights: Sequence[float] | None = None) -> str:
    """``sigmoid`` for one loss; ``sigmoid x 1.0 + sft x 0.5`` for a weighted combination."""
    if isinstance(loss_type, str):
        return loss_type if weights is None or list(weights) == [1.0] else f"{loss_type} x {weights[0]}"
    weights = weights or [1.0] * len(loss_type)
    return " + ".join(f"{name} x {weight}" for name, weight in zip(loss_type, weights, strict=True))
