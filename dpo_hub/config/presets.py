"""LoRA, DPO and generation presets: typed, frozen settings whose field help is the documentation.

Each preset turns into the library object it configures (``peft.LoraConfig``, ``trl.DPOConfig``);
the presets state every default that differs between trl releases instead of inheriting it. Any other
field of those classes rides along in ``extra`` (see ``passthrough``); ``LORA_PRESETS``/``DPO_PRESETS``
name the starting points a recipe can pick (``lora.preset: all_linear``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dpo_hub.config import fields as passthrough
from dpo_hub.config import trackers
from dpo_hub.config.combinations import check_dpo, check_lora
from dpo_hub.config.fields import Settings
from dpo_hub.config.losses import KNOWN_LOSS_TYPES, trl_loss_types
from dpo_hub.config.values import check, check_choice

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SAVED_ACTIVATIONS = ("auto", "bf16", "fp32")
# transformers' ``SchedulerType`` values; ``scheduler_types()`` reads the installed list for any other name.
_KNOWN_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)
STRATEGIES = ("no", "steps", "epoch")
LORA_BIASES = ("none", "all", "lora_only")
MIN_MAX_LENGTH = 16  # below this a prompt and an answer hardly fit
TUTORIAL_PROMPT = "Is eating animals cruel?"  # the tutorial's final check


@functools.cache
def scheduler_types() -> tuple[str, ...]:
    """The learning-rate scheduler names the installed transformers accepts."""
    try:
        from transformers.trainer_utils import SchedulerType
    except ImportError:
        return _KNOWN_SCHEDULERS
    return tuple(s.value for s in SchedulerType)


@dataclass(frozen=True)
class LoraPreset:
    """Which layers get LoRA adapters and how large they are."""

    r: int = field(
        default=4, metadata={"help": "LoRA rank (>= 1); higher: more trainable weights and memory."}
    )
    lora_alpha: int = field(default=8, metadata={"help": "Scale of the update (alpha / r); > 0."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: tuple[str, ...] = field(
        default=("c_attn", "c_proj"),
        metadata={"help": "Module names to adapt; ('all-linear',) adapts every linear layer but the head."},
    )
    fan_in_fan_out: bool | None = field(
        default=True,
        metadata={"help": "True for GPT-2's Conv1D layers; None: detect from the model."},
    )
    bias: str = field(default="none", metadata={"help": "Which biases train: none, all or lora_only."})
    preset: str = field(
        default="gpt2_attention",
        compare=False,
        metadata={
            "help": "Named preset the other lora.* keys apply on top of: gpt2_attention, gpt2_all_linear, "
            "all_linear."
        },
    )
    extra: Mapping[str, Any] = field(
        default_factory=Settings,
        metadata={
            "passthrough": True,
            "help": f"Any other peft.LoraConfig field, e.g. use_rslora: true ({passthrough.DOCS['lora']}).",
        },
    )

    def __post_init__(self) -> None:
        check("lora.r", self.r, self.r >= 1, ">= 1", "the LoRA rank; 4 to 64 is usual")
        check(
            "lora.lora_alpha",
            self.lora_alpha,
            self.lora_alpha > 0,
            "> 0",
            "the update's scale; often 2 x lora.r",
        )
        check(
            "lora.lora_dropout",
            self.lora_dropout,
            0 <= self.lora_dropout < 1,
            "in [0, 1)",
            "0.05 to 0.1 is usual",
        )
        check(
            "lora.target_modules",
            self.target_modules,
            bool(self.target_modules) and all(isinstance(m, str) and m.strip() for m in self.target_modules),
            "one or more module names",
            "e.g. c_attn,c_proj, or all-linear",
        )
        check_choice("lora.bias", self.bias, LORA_BIASES)
        check_choice("lora.preset", self.preset, tuple(LORA_PRESETS))
        object.__setattr__(self, "extra", passthrough.validated("lora", self.extra, _typed(self)))
        check_lora(self.extra)

    @classmethod
    def gpt2_attention(cls) -> LoraPreset:
        """The tutorial's preset: attention and projection layers of GPT-2, r=4, alpha=8, dropout 0.1."""
        return cls()

    @classmethod
    def gpt2_all_linear(cls) -> LoraPreset:
        """Every GPT-2 Conv1D layer (attention, projections and the MLP's ``c_fc``)."""
        return cls(target_modules=("c_attn", "c_proj", "c_fc"), preset="gpt2_all_linear")

    @classmethod
    def all_linear(cls, r: int = 8, lora_alpha: int = 16) -> LoraPreset:
        """Generic preset for any architecture: every linear layer but the output head."""
        return cls(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            target_modules=("all-linear",),
            fan_in_fan_out=None,
            preset="all_linear",
        )

    def to_peft_config(self, model: Any = None):
        """Build the ``peft.LoraConfig``; ``fan_in_fan_out=None`` is resolved against ``model``."""
        from peft import LoraConfig

        fan_in_fan_out = self.fan_in_fan_out
        if fan_in_fan_out is None:
            fan_in_fan_out = model is not None and uses_conv1d(model, self.target_modules)
        targets: str | list[str] = (
            "all-linear" if self.target_modules == ("all-linear",) else list(self.target_modules)
        )
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            fan_in_fan_out=fan_in_fan_out,
            bias=self.bias,
            task_type="CAUSAL_LM",
            **passthrough.library_kwargs("lora", self.extra),
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

    beta: float = field(
        default=0.1, metadata={"help": "Strength of the pull towards the reference model; > 0."}
    )
    loss_type: str | tuple[str, ...] = field(
        default="sigmoid",
        metadata={
            "help": "trl loss, or several (sigmoid,sft) weighted by dpo.loss_weights: "
            f"{', '.join(KNOWN_LOSS_TYPES)}."
        },
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label noise for the robust/exo losses, in [0, 0.5)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the adapter; > 0."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": f"transformers scheduler name: {', '.join(_KNOWN_SCHEDULERS)}."},
    )
    warmup_steps: int = field(default=2, metadata={"help": "Linear warm-up steps (>= 0)."})
    num_train_epochs: float = field(
        default=1.0,
        metadata={"help": "Passes over the train split; > 0 unless max_steps is set."},
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many steps (>= 1; -1: use epochs)."}
    )
    per_device_train_batch_size: int = field(
        default=1,
        metadata={"help": "Pairs per device per step (>= 1); higher: more memory."},
    )
    per_device_eval_batch_size: int = field(
        default=2,
        metadata={
            "help": "Pairs per device when evaluating (>= 1); higher: more memory (trl's 8 holds ~1 GB of "
            "logit tiles at 512 tokens), faster only on GPUs."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Steps summed before an update (>= 1)."}
    )
    effective_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Fix per-device x processes x accumulation; accumulation adapts to the process count."
        },
    )
    max_length: int = field(
        default=512,
        metadata={
            "help": f"Prompt + answer tokens kept (>= {MIN_MAX_LENGTH}, <= the model's positions); higher: "
            "more memory."
        },
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N steps (eval_strategy=steps)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log train metrics every N steps (>= 1)."})
    save_strategy: str = field(
        default="steps", metadata={"help": "Checkpoints to resume from: steps, epoch or no."}
    )
    save_steps: int = field(
        default=100,
        metadata={
            "help": "Checkpoint every N steps (>= 1), in OUTPUT_DIR.checkpoints until the run finishes; "
            "lower: safer, slower."
        },
    )
    save_total_limit: int = field(
        default=2, metadata={"help": "Checkpoints kept (the newest, >= 1); more: more disk."}
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "fp32 | bf16 | fp16 | auto: bf16 autocast where the hardware computes it (GPUs with "
            "bf16; CPUs with AVX-512 BF16/AMX where a short probe of this model's matmuls runs >= 1.1x "
            "faster in bf16, cached per model shape and CPU), else fp32; LoRA weights stay fp32. fp16 "
            "needs a GPU."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Zero every dropout, lora_dropout too (trl's default); false keeps lora_dropout, which "
            "costs ~11% of a CPU step (random masks) and memory."
        },
    )
    base_model_dropout: bool = field(
        default=False,
        metadata={
            "help": "With disable_dropout false: dropout inside the frozen base model too (GPT-2's config "
            "has 0.1); false: off, so the cached reference is exact and attention runs fused."
        },
    )
    gradient_checkpointing: bool | str = field(
        default="auto",
        metadata={
            "help": "true: less memory, ~30% slower; auto: on only when the step's estimated activations "
            "pass half the free memory."
        },
    )
    saved_activations: str = field(
        default="auto",
        metadata={
            "help": "bf16 | fp32 | auto: precision of the activations a step keeps for its backward pass; "
            "bf16 halves them (~0.35 GB at 2 x 512 GPT-2 tokens) for ~3% more time, forward and weights "
            "stay fp32; auto: bf16 for fp32 steps without checkpointing."
        },
    )
    bf16_base_weights: bool = field(
        default=True,
        metadata={
            "help": "Store the frozen base's Linear/Conv1D weights in bf16 when the step runs in bf16 "
            "autocast on a CPU: autocast rounds them to bf16 at every matmul anyway, so results are "
            "bitwise the same; the cast per forward is saved and they take half the memory. Embeddings, "
            "norms, the LM head and LoRA stay fp32. No effect in fp32 steps."
        },
    )
    reference_cache: bool = field(
        default=True,
        metadata={
            "help": "Each pair's reference log-probs computed once, on first use (no gradients), and cached "
            "in $DPO_HUB_CACHE for reruns and sweeps; false: trl recomputes them every step."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for init, shuffling and dropout."})
    preset: str = field(
        default="tutorial",
        compare=False,
        metadata={"help": "Named preset the other dpo.* keys apply on top of: tutorial."},
    )
    extra: Mapping[str, Any] = field(
        default_factory=Settings,
        metadata={
            "passthrough": True,
            "help": f"Any other trl.DPOConfig field, e.g. weight_decay: 0.01 ({passthrough.DOCS['dpo']}).",
        },
    )

    @classmethod
    def tutorial(cls) -> DPOPreset:
        """The tutorial's hyperparameters (beta 0.1, lr 1e-4, 1 epoch, batch 1, trl's dropout off) with
        dpo_hub's speed settings: precision, checkpointing and the cached reference decided for the
        hardware."""
        return cls()

    @property
    def loss_types(self) -> tuple[str, ...]:
        """The loss types, one or several (``loss_type`` is a text for one, a tuple for a combination)."""
        return (self.loss_type,) if isinstance(self.loss_type, str) else tuple(self.loss_type)

    def __post_init__(self) -> None:
        losses = self.loss_type.split(",") if isinstance(self.loss_type, str) else list(self.loss_type)
        losses = [str(name).strip() for name in losses]
        check(
            "dpo.loss_type",
            self.loss_type,
            bool(losses),
            "one or more trl losses",
            "e.g. sigmoid, or sigmoid,sft",
        )
        object.__setattr__(self, "loss_type", losses[0] if len(losses) == 1 else tuple(losses))
        for loss in losses:
            if loss != "sigmoid" and loss not in trl_loss_types():  # importing trl takes seconds
                raise ValueError(
                    f"dpo.loss_type={loss!r} is not a loss the installed trl implements; "
                    f"use one of: {', '.join(trl_loss_types())}"
                )
        check_choice("dpo.precision", self.precision, PRECISIONS)
        check_choice("dpo.saved_activations", self.saved_activations, SAVED_ACTIVATIONS)
        check_choice("dpo.preset", self.preset, tuple(DPO_PRESETS))
        self._check_values()
        extra = passthrough.validated("dpo", self.extra, _typed(self))
        if "report_to" in extra:
            extra = Settings({**extra, "report_to": trackers.normalize(extra["report_to"])})
        weights = extra.get("loss_weights")
        check(
            "dpo.loss_weights",
            weights,
            weights is None
            or (len(weights) == len(losses) and all(math.isfinite(w) and w >= 0 for w in weights)),
            f"{len(losses)} weight(s) >= 0, one per dpo.loss_type",
            f"dpo.loss_type is {','.join(losses)}; e.g. {','.join(['1.0'] * len(losses))}",
        )
        object.__setattr__(self, "extra", extra)
        check_dpo(
            tuple(losses),
            self.label_smoothing,
            self.gradient_accumulation_steps,
            self.effective_batch_size,
            extra,
        )

    def _check_values(self) -> None:
        check(
            "dpo.beta",
            self.beta,
            self.beta > 0,
            "> 0",
            "the strength of the pull towards the reference; 0.1 is usual",
        )
        check(
            "dpo.label_smoothing",
            self.label_smoothing,
            0 <= self.label_smoothing < 0.5,
            "in [0, 0.5)",
            "the assumed share of flipped labels; 0 for clean data",
        )
        check(
            "dpo.learning_rate",
            self.learning_rate,
            self.learning_rate > 0,
            "> 0",
            "1e-5 to 5e-4 is usual for LoRA",
        )
        if self.lr_scheduler_type not in _KNOWN_SCHEDULERS:
            check_choice("dpo.lr_scheduler_type", self.lr_scheduler_type, scheduler_types())
        check("dpo.warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0", "0 turns warm-up off")
        check(
            "dpo.max_steps",
            self.max_steps,
            self.max_steps == -1 or self.max_steps >= 1,
            ">= 1 or -1",
            "-1 trains for dpo.num_train_epochs",
        )
        check(
            "dpo.num_train_epochs",
            self.num_train_epochs,
            self.num_train_epochs > 0 or self.max_steps >= 1,
            "> 0",
            "passes over the train split; or set dpo.max_steps",
        )
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
            "save_total_limit",
        ):
            check(
                f"dpo.{name}",
                getattr(self, name),
                getattr(self, name) >= 1,
                ">= 1",
                "a whole count of steps or pairs",
            )
        for name in ("effective_batch_size", "eval_steps"):
            value = getattr(self, name)
            check(f"dpo.{name}", value, value is None or value >= 1, ">= 1 or null", "null: not set")
        check(
            "dpo.max_length",
            self.max_length,
            self.max_length >= MIN_MAX_LENGTH,
            f">= {MIN_MAX_LENGTH}",
            "prompt + answer tokens; 512 is usual, more needs more memory",
        )
        check(
            "dpo.gradient_checkpointing",
            self.gradient_checkpointing,
            isinstance(self.gradient_checkpointing, bool) or self.gradient_checkpointing == "auto",
            "a bool (true/false) or auto",
            "auto decides from the estimated activation memory",
        )
        check_choice("dpo.eval_strategy", self.eval_strategy, STRATEGIES)
        check_choice("dpo.save_strategy", self.save_strategy, STRATEGIES)

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

        from dpo_hub.runtime import resolve_precision

        precision, _ = resolve_precision(self.precision, use_cpu)
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in (
            "loss_type",
            "precision",
            "effective_batch_size",
            "gradient_accumulation_steps",
            "base_model_dropout",
            "saved_activations",
            "bf16_base_weights",
            "reference_cache",
            "preset",
            "extra",
        ):
            kwargs.pop(name)
        kwargs["gradient_checkpointing"] = (
            self.gradient_checkpointing is True
        )  # auto: decided once the model loads
        return DPOConfig(
            output_dir=output_dir,
            loss_type=list(self.loss_types),
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=use_cpu,
            gradient_accumulation_steps=self.accumulation_for(num_processes),
            **{"report_to": "none", **kwargs, **passthrough.library_kwargs("dpo", self.extra), **extra},
        )


LORA_PRESETS: dict[str, Callable[[], LoraPreset]] = {
    "gpt2_attention": LoraPreset.gpt2_attention,
    "gpt2_all_linear": LoraPreset.gpt2_all_linear,
    "all_linear": LoraPreset.all_linear,
}
DPO_PRESETS: dict[str, Callable[[], DPOPreset]] = {"tutorial": DPOPreset.tutorial}


def _typed(preset: Any) -> list[str]:
    """The preset's own fields (not pass-through)."""
    return [f.name for f in dataclasses.fields(preset) if not f.metadata.get("passthrough")]


@dataclass(frozen=True)
class Generation:
    """How base and tuned models answer the check prompts (identical, seeded settings for both)."""

    prompts: tuple[str, ...] = field(
        default=(TUTORIAL_PROMPT,), metadata={"help": "Prompts answered by both models."}
    )
    max_new_tokens: int = field(default=50, metadata={"help": "Answer length (>= 1); higher: slower."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (seeded) instead of greedy decoding."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; > 0 when sampling."})
    top_k: int = field(default=50, metadata={"help": "Sample from the k most likely tokens (0: off)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass, in (0, 1]."})
    seed: int = field(default=42, metadata={"help": "Seed set before each answer (same for base and tuned)."})

    def __post_init__(self) -> None:
        check(
            "generation.prompts",
            self.prompts,
            all(isinstance(p, str) and p.strip() for p in self.prompts),
            "non-empty texts",
            "drop the empty prompt, or pass [] for no generations",
        )
        check(
            "generation.max_new_tokens", self.max_new_tokens, self.max_new_tokens >= 1, ">= 1", "50 is usual"
        )
        check(
            "generation.temperature",
            self.temperature,
            self.temperature > 0 or not self.do_sample,
            "> 0",
            "0.7 is usual; for greedy decoding set generation.do_sample false",
        )
        check("generation.top_k", self.top_k, self.top_k >= 0, ">= 0", "0 turns top-k off")
        check(
            "generation.top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1]", "1 turns nucleus sampling off"
        )
