"""What makes a run fast on the hardware it has: checkpointing, dropout, saved activations.

The CPU-only levers on trl's LM head and on the backbone's rows are in ``cpu_head`` and ``cpu_rows``; what
``precision: auto`` runs in on a CPU is measured in ``precision``.

Each function returns its decision and a reason, which the run logs (``precision auto: fp32 (...)``).
Measured effects are in ``benchmarks/README.md`` (``benchmarks/bench_dpo.py``).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("dpo_hub")
CHECKPOINTING_SHARE = 0.5  # checkpoint when activations would take more than this share of free memory


def activation_bytes(config: Any, sequences: int, length: int, bytes_per_value: int) -> int:
    """Activations kept for the backward pass of one step (Korthikanti et al. 2022, per layer
    ``s*b*h*(34 + 5*a*s/h)`` bytes at 2 bytes a value; the attention term is left out, as the fused attention
    kernels keep no ``s x s`` scores)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", 768)
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", 12)
    return int(layers * sequences * length * hidden * 34 * bytes_per_value / 2)


def free_memory_bytes(device: Any) -> int:
    import psutil
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def want_checkpointing(setting: bool | str, model: Any, args: Any, device: Any) -> tuple[bool, str]:
    """``dpo.gradient_checkpointing``: true/false as set; ``auto`` checkpoints only when the activations of
    the longest step would pass ``CHECKPOINTING_SHARE`` of the free memory (it costs ~30% more compute)."""
    if setting != "auto":
        return bool(setting), "set by dpo.gradient_checkpointing"
    need = activation_bytes(
        model.config,
        2 * args.per_device_train_batch_size,
        args.max_length or 1024,
        2 if (args.bf16 or args.fp16) else 4,
    )
    free = free_memory_bytes(device)
    on = need > CHECKPOINTING_SHARE * free
    return on, (
        f"activations of a {args.max_length}-token step ~{need / 2**30:.2f} GiB vs {free / 2**30:.1f} GiB "
        "free: " + ("on (less memory, ~30% slower)" if on else "off (faster)")
    )


def disable_base_dropout(model: Any) -> int:
    """Zero the dropout inside the frozen base model, keeping LoRA's own dropout; return how many were zeroed.

    With the base deterministic, the reference (adapter off) equals what is precomputed, and attention takes
    the fused kernel. trl's ``disable_dropout`` zeroes LoRA's dropout as well.
    """
    import torch

    zeroed = 0
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, torch.nn.Dropout) and module.p:
            module.p, zeroed = 0.0, zeroed + 1
        if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout:
            module.attention_dropout, zeroed = 0.0, zeroed + 1
    return zeroed


def fuse_activations(model: Any) -> int:
    """Swap GPT-2's ``gelu_new`` (tanh GELU written as five tensor ops, each kept for the backward pass) for
    torch's fused kernel of the same formula; return how many were swapped. Saves ~40% of a step's
    activations."""
    from transformers.activations import ACT2FN, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])
                swapped += 1
    return swapped


COMPACT_MIN_VALUES = 1 << 16  # smaller saved tensors are left as they are


def want_compact_activations(setting: str, args: Any) -> tuple[bool, str]:
    """``dpo.saved_activations``: bf16/fp32 as set; ``auto`` stores them in bf16 when the step computes in
    fp32 without checkpointing (autocast already saves most in half precision; checkpointing saves few)."""
    if setting != "auto":
        return setting == "bf16", "set by dpo.saved_activations"
    if args.bf16 or args.fp16:
        return False, "autocast already keeps most of them in half precision"
    if args.gradient_checkpointing:
        return False, "checkpointing keeps only each layer's input"
    return (
        True,
        "an fp32 step keeps half the bytes for its backward pass (~3% more time, gradients to ~3 digits)",
    )


def bf16_hooks(model: Any) -> tuple[Any, Any]:
    """The (pack, unpack) pair of ``torch.autograd.graph.saved_tensors_hooks`` that keeps large fp32
    activations in bf16 and leaves ``model``'s parameters (frozen weights are saved by reference) and small
    tensors alone."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor: Any) -> Any:
        if (
            tensor.dtype != torch.float32
            or tensor.numel() < COMPACT_MIN_VALUES
            or tensor.untyped_storage().data_ptr() in weights
        ):
            return tensor
        return tensor.to(torch.bfloat16), tensor.dtype

    def unpack(packed: Any) -> Any:
        return packed[0].to(packed[1]) if isinstance(packed, tuple) else packed

    return pack, unpack


def want_bf16_base_weights(
    setting: bool, args: Any, use_cpu: bool, quantized: bool, sharded: bool
) -> tuple[bool, str]:
    """``dpo.bf16_base_weights``: store the frozen matmul weights in bf16 where the step runs in bf16
    autocast on a CPU. Autocast rounds an fp32 weight to bf16 at every matmul (a frozen weight's cast is not
    cached), so storing it rounded once gives bitwise the same results without the per-forward cast."""
    if not setting:
        return False, "dpo.bf16_base_weights: false"
    if not args.bf16:
        return False, "the step runs in fp32: the weights stay as loaded"
    if not use_cpu:
        return False, "CPU only: measured there (benchmarks/base_matmul_levers.py); GPUs not measured"
    if quantized:
        return False, "model.quantization: bitsandbytes holds the base weights"
    if sharded:
        return False, "sharded weights (FSDP/DeepSpeed) keep one dtype"
    return True, "bf16 autocast rounds them at every matmul anyway: same results, no cast per forward"


def store_frozen_weights_in_bf16(model: Any) -> int:
    """Cast the frozen fp32 ``Linear``/``Conv1D`` layers of ``model`` to bf16 (weight and bias); return their
    parameter count. Embeddings, norms, the output layer and every trainable (LoRA) weight stay as they are,
    so the residual stream and the LM head keep their precision."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(head.weight)} if head is not None else set()
    cast = 0
    for name, module in model.named_modules():
        if "lora_" in name or not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        weights = [p for p in module.parameters(recurse=False)]
        if (
            module is head
            or any(id(p) in tied or p.requires_grad or p.dtype != torch.float32 for p in weights)
            or not weights
        ):
            continue
        module.to(torch.bfloat16)
        cast += sum(p.numel() for p in weights)
    return cast


def keep_4bit_layout(model: Any) -> int:
    """Keep bitsandbytes' 4-bit weights in their training layout on the CPU; returns the layers changed.

    On a CPU with AVX-512 BF16, bitsandbytes 0.50 repacks a ``Linear4bit``'s weights for inference at its
    first no-grad forward in eval mode (an evaluation before training) and the next training step then fails
    ("a view of a leaf Variable that requires grad is being used in an in-place operation").
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed
