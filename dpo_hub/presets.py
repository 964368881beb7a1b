"""LoRA, DPO and generation presets: typed, frozen settings whose field help is the documentation.

Each preset turns into the library object it configures (``peft.LoraConfig``, ``trl.DPOConfig``);
the presets state every default that differs between trl releases instead of inheriting it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

# trl 1.x's losses; ``trl_loss_types()`` reads the installed trl's own list when it can.
_KNOWN_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
TUTORIAL_PROMPT = "Is eating animals cruel?"  # the tutorial's final check


@functools.cache
def trl_loss_types() -> tuple[str, ...]:
    """The loss types the installed trl's ``DPOTrainer`` implements (``DPOConfig`` accepts any string).

    Read from the branches of the trainer's loss code; falls back to trl 1.x's list if that code moved.
    """
    from trl import DPOTrainer

    try:
        source = inspect.getsource(DPOTrainer)
    except (OSError, TypeError):
        return _KNOWN_LOSS_TYPES
    found = tuple(dict.fromkeys(re.findall(r'loss_type == "([a-z_]+)"', source)))
    return found if "sigmoid" in found else _KNOWN_LOSS_TYPES


def untrained_loss(loss_type: str, beta: float, label_smoothing: float = 0.0, discopop_tau: float = 0.05) -> float | None:
    """The loss when policy and reference agree (every log-ratio 0), i.e. at step 0 of a LoRA run.

    ``None`` where it depends on the model (``sft``, the chosen answers' NLL) or is unknown.
    Used for the reference line of the loss plot; the values follow each loss's paper at zero margin.
    """
    half = math.log(2)  # -log sigmoid(0)
    eps = label_smoothing
    values = {
        "sigmoid": half, "robust": half, "aot": half, "aot_unpaired": half, "sigmoid_norm": half,
        "hinge": 1.0, "apo_zero": 1.0, "apo_down": 1.0,
        "ipo": (1 / (2 * beta)) ** 2, "sppo_hard": 2 * (0.5 / beta) ** 2,
        "nca_pair": 2 * half, "bco_pair": 2 * half, "discopop": (half + 1.0) / 2,
        "exo_pair": (0.5 * (math.log(0.5) - math.log1p(-eps)) + 0.5 * (math.log(0.5) - math.log(eps))) if eps > 0 else None,
    }
    return values.get(loss_type)


@dataclass(frozen=True)
class LoraPreset:
    """Which layers get LoRA adapters and how large they are."""

    r: int = field(default=4, metadata={"help": "LoRA rank; higher: more trainable weights and memory."})
    lora_alpha: int = field(default=8, metadata={"help": "Scale of the update (alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("c_attn", "c_proj"),
        metadata={"help": "Module names to adapt; ('all-linear',) adapts every linear layer but the head."},
    )
    fan_in_fan_out: bool | None = field(
        default=True,
        metadata={"help": "True for GPT-2's Conv1D layers; None: detect from the model."},
    )
    bias: str = field(default="none", metadata={"help": "Which biases train: none, all or lora_only."})

    @classmethod
    def gpt2_attention(cls) -> LoraPreset:
        """The tutorial's preset: attention and projection layers of GPT-2, r=4, alpha=8, dropout 0.1."""
        return cls()

    @classmethod
    def gpt2_all_linear(cls) -> LoraPreset:
        """Every GPT-2 Conv1D layer (attention, projections and the MLP's ``c_fc``)."""
        return cls(target_modules=("c_attn", "c_proj", "c_fc"))

    @classmethod
    def all_linear(cls, r: int = 8, lora_alpha: int = 16) -> LoraPreset:
        """Generic preset for any architecture: every linear layer but the output head."""
        return cls(r=r, lora_alpha=lora_alpha, lora_dropout=0.05, target_modules=("all-linear",), fan_in_fan_out=None)

    def to_peft_config(self, model: Any = None):
        """Build the ``peft.LoraConfig``; ``fan_in_fan_out=None`` is resolved against ``model``."""
        from peft import LoraConfig

        fan_in_fan_out = self.fan_in_fan_out
        if fan_in_fan_out is None:
            fan_in_fan_out = model is not None and uses_conv1d(model, self.target_modules)
        targets: str | list[str] = "all-linear" if self.target_modules == ("all-linear",) else list(self.target_modules)
        return LoraConfig(
            r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, target_modules=targets,
            fan_in_fan_out=fan_in_fan_out, bias=self.bias, task_type="CAUSAL_LM",
        )


def uses_conv1d(model: Any, target_modules: tuple[str, ...]) -> bool:
    """True when a targeted module of ``model`` is a transformers ``Conv1D`` (GPT-2 style)."""
    from transformers.pytorch_utils import Conv1D

    everything = target_modules == ("all-linear",)
    return any(
        isinstance(module, Conv1D) and (everything or name.rsplit(".", 1)[-1] in target_modules)
        for name, module in model.named_modules()
    )


@dataclass(frozen=True)
class DPOPreset:
    """DPO hyperparameters, with the costs they carry noted in the help text."""

    beta: float = field(default=0.1, metadata={"help": "Strength of the pull towards the reference model."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"trl loss: one of {', '.join(_KNOWN_LOSS_TYPES)}."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label noise for the robust/exo losses."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the adapter."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=2, metadata={"help": "Linear warm-up steps."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the train split."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use epochs)."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Pairs per device per step; higher: more memory."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Pairs per device when evaluating."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps summed before an update."})
    effective_batch_size: int | None = field(
        default=None,
        metadata={"help": "Fix per-device x processes x accumulation; accumulation adapts to the process count."},
    )
    max_length: int = field(default=512, metadata={"help": "Prompt + answer tokens kept; higher: more memory."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N steps (eval_strategy=steps)."})
    logging_steps: int = field(default=10, metadata={"help": "Log train metrics every N steps."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints to resume from: steps, epoch or no."})
    save_steps: int = field(
        default=100,
        metadata={"help": "Checkpoint every N steps, in OUTPUT_DIR.checkpoints until the run finishes; lower: safer, slower."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the newest); more: more disk."})
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16 | fp16 | auto (bf16 on GPUs that support it)."})
    disable_dropout: bool = field(default=False, metadata={"help": "trl's default True zeroes lora_dropout."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Less memory, ~30% slower."})
    seed: int = field(default=42, metadata={"help": "Seed for init, shuffling and dropout."})

    @classmethod
    def tutorial(cls) -> DPOPreset:
        """The tutorial's values on today's trl: beta 0.1, lr 1e-4, 1 epoch, batch 1, fp32, dropout kept."""
        return cls()

    def __post_init__(self) -> None:
        if self.loss_type != "sigmoid" and self.loss_type not in trl_loss_types():  # importing trl takes seconds
            raise ValueError(f"dpo.loss_type={self.loss_type!r} is not a loss the installed trl implements; "
                             f"use one of: {', '.join(trl_loss_types())}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"dpo.precision={self.precision!r}; use one of: {', '.join(PRECISIONS)}")

    def accumulation_for(self, num_processes: int) -> int:
        """Gradient accumulation that gives ``effective_batch_size`` on ``num_processes`` processes."""
        if self.effective_batch_size is None:
            return self.gradient_accumulation_steps
        per_step = self.per_device_train_batch_size * num_processes
        if self.effective_batch_size % per_step:
            raise ValueError(
                f"dpo.effective_batch_size={self.effective_batch_size} is not a multiple of per-device batch "
                f"{self.per_device_train_batch_size} x {num_processes} processes; change one of them"
            )
        return self.effective_batch_size // per_step

    def to_dpo_config(self, output_dir: str, num_processes: int = 1, use_cpu: bool = False, **extra: Any):
        """Build the ``trl.DPOConfig`` for a run writing checkpoints under ``output_dir``."""
        from trl import DPOConfig

        bf16, fp16 = _precision_flags(self.precision, use_cpu)
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("loss_type", "precision", "effective_batch_size", "gradient_accumulation_steps"):
            kwargs.pop(name)
        return DPOConfig(
            output_dir=output_dir, loss_type=[self.loss_type], bf16=bf16, fp16=fp16, use_cpu=use_cpu,
            gradient_accumulation_steps=self.accumulation_for(num_processes), report_to="none",
            **{**kwargs, **extra},
        )


def _precision_flags(precision: str, use_cpu: bool) -> tuple[bool, bool]:
    import torch

    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return precision == "bf16", precision == "fp16"


@dataclass(frozen=True)
class Generation:
    """How base and tuned models answer the check prompts (identical, seeded settings for both)."""

    prompts: tuple[str, ...] = field(default=(TUTORIAL_PROMPT,), metadata={"help": "Prompts answered by both models."})
    max_new_tokens: int = field(default=50, metadata={"help": "Answer length; higher: slower."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (seeded) instead of greedy decoding."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_k: int = field(default=50, metadata={"help": "Sample from the k most likely tokens."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    seed: int = field(default=42, metadata={"help": "Seed set before each answer (same for base and tuned)."})
