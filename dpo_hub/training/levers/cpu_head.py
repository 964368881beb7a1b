"""trl's fused LM head on the CPU: fewer positions, smaller tiles, and tile folds without temporaries.

trl projects hidden states through the 50,257-wide head in tiles and folds each tile into per-token
statistics. On CUDA a Triton kernel does the fold in one pass; elsewhere trl runs the same math as a dozen
whole-tile torch ops, each allocating a tile-sized temporary, which on a CPU costs more than the projection
itself (``benchmarks/README.md``). Each lever here names the trl globals it would set; the trainer sets them
only while it trains or evaluates (``upstream.patched``), and a lever whose trl name moved stays off and says
why. Results are those of trl's own code (``tests/test_cpu_levers.py``).
"""

from __future__ import annotations

import math
from typing import Any

from dpo_hub import upstream
from dpo_hub.training.levers import Lever

CPU_VOCAB_TILE = (
    2048  # vs trl's 32,768: ~0.5 GB less at peak, and a tile stays in cache (head 10-18% faster than 8,192)
)
Patches = list[tuple[upstream.Private, Any]]


def head_levers(use_cpu: bool) -> tuple[dict[str, Lever], Patches]:
    """Each LM-head lever's state on this hardware, and the trl module globals to set while the run trains
    (``upstream.patched``: undone afterwards). On accelerators trl's Triton kernel already does all three."""
    names = ("score_completions_only", "smaller_logit_tiles", "lean_tile_folds")
    if not use_cpu:
        return {
            n: Lever(False, "not needed: trl's fused Triton kernel runs on accelerators") for n in names
        }, []
    levers, patches = {}, []
    for name, make in (
        ("score_completions_only", _completions_only),
        ("smaller_logit_tiles", _smaller_tiles),
        ("lean_tile_folds", _lean_folds),
    ):
        lever, more = make()
        levers[name] = lever
        patches += more
    return levers, patches


def _completions_only() -> tuple[Lever, Patches]:
    """Project only completion positions on the CPU too (trl does so on CUDA; elsewhere it scores every
    position to keep tile shapes fixed for compilers, which eager CPU runs do not need)."""
    why = upstream.missing(upstream.TRL_USE_TRITON)
    if why:
        return Lever(False, why), []
    original = upstream.get(upstream.TRL_USE_TRITON)

    def compact(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    return Lever(True, "log-probs of answer tokens only (trl scores every position off CUDA)"), [
        (upstream.TRL_USE_TRITON, compact)
    ]


def _smaller_tiles() -> tuple[Lever, Patches]:
    """Project 2,048 vocabulary entries at a time instead of 32,768 (less memory, faster folds, same
    result)."""
    why = upstream.missing(upstream.TRL_TILE_SIZE)
    if why:
        return Lever(False, why), []
    trls = upstream.get(upstream.TRL_TILE_SIZE)
    size = min(trls, CPU_VOCAB_TILE)
    return Lever(True, f"logit tiles {size} wide (trl: {trls})"), [(upstream.TRL_TILE_SIZE, size)]


def _lean_folds() -> tuple[Lever, Patches]:
    """trl's torch folds of a logit tile swapped for ones that work in place (same statistics and gradients,
    ~3x fewer passes over the tile). Softcapped logits, entropy gradients and half-precision tiles keep trl's
    own."""
    why = upstream.missing(upstream.TRL_FORWARD_TILE, upstream.TRL_BACKWARD_TILE)
    if why:
        return Lever(False, why), []
    forward, backward = upstream.get(upstream.TRL_FORWARD_TILE), upstream.get(upstream.TRL_BACKWARD_TILE)
    return Lever(True, "in-place logit tile folds (fp32 tiles without softcap; others keep trl's)"), [
        (upstream.TRL_FORWARD_TILE, _with_fallback(_forward_in_place, forward)),
        (upstream.TRL_BACKWARD_TILE, _with_fallback(_backward_in_place, backward)),
    ]


def _with_fallback(lean: Any, original: Any) -> Any:
    """trl's fold with ``lean`` first; ``lean`` returns NotImplemented, before writing anything, for what it
    does not cover."""

    def fold(*args: Any, **kwargs: Any) -> None:
        if lean(*args, **kwargs) is NotImplemented:
            original(*args, **kwargs)

    fold.dpo_hub_original = original
    return fold


def _forward_in_place(
    tile,
    tile_stride,
    targets,
    running_max,
    sum_exp,
    x_sum_exp,
    sq_sum_exp,
    z_sum,
    max_before_target,
    target_logit,
    vocab_start,
    n_cols,
    logit_scale,
    softcap,
    inv_t,
    HAS_SOFTCAP,
    HAS_ENTROPY,
    HAS_LOG_SUM_SQ_PROBS,
    HAS_MEAN_LOGITS,
    HAS_IS_TOP1,
    BLOCK_SIZE,
):  # noqa: N803 (trl's names)
    import torch

    if HAS_SOFTCAP or tile.dtype != torch.float32:
        return NotImplemented
    z = tile  # trl overwrites the tile with the next projection: it is free to reuse
    if logit_scale * inv_t != 1.0:
        z.mul_(logit_scale * inv_t)
    local = targets - vocab_start
    in_tile = (local >= 0) & (local < n_cols)
    target_z = z.gather(-1, local.clamp(0, n_cols - 1).unsqueeze(-1)).squeeze(-1)
    target_logit.copy_(torch.where(in_tile, target_z, target_logit))
    if HAS_MEAN_LOGITS:
        z_sum += z.sum(-1)
    tile_max, first_max = z.max(-1)
    if HAS_IS_TOP1:
        # Only `target >= max and target > max_before_target` is read: a tile wholly before the target gives
        # its maximum; the target's own tile gives its maximum if that comes first, else nothing can beat it
        earlier = (local >= n_cols) | (in_tile & (first_max < local))
        max_before_target.copy_(torch.maximum(max_before_target, tile_max.masked_fill(~earlier, -math.inf)))
    new_m = torch.maximum(running_max, tile_max)
    rescale = torch.exp(running_max - new_m)
    if HAS_ENTROPY or HAS_LOG_SUM_SQ_PROBS:
        e = torch.sub(z, new_m.unsqueeze(-1)).exp_()
        if HAS_ENTROPY:
            x_sum_exp.mul_(rescale).add_(torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).view(-1))
        if HAS_LOG_SUM_SQ_PROBS:
            sq_sum_exp.mul_(rescale * rescale).add_(torch.bmm(e.unsqueeze(1), e.unsqueeze(2)).view(-1))
    else:
        e = z.sub_(new_m.unsqueeze(-1)).exp_()
    sum_exp.mul_(rescale).add_(e.sum(-1))
    running_max.copy_(new_m)
    return None


def _backward_in_place(
    tile,
    tile_stride,
    targets,
    log_z,
    entropy,
    grad_logprobs,
    grad_entropy,
    vocab_start,
    n_cols,
    logit_scale,
    softcap,
    inv_t,
    HAS_SOFTCAP,
    HAS_LOGPROB_GRAD,
    HAS_ENTROPY_GRAD,
    BLOCK_SIZE,
):  # noqa: N803 (trl's names)
    import torch

    if HAS_SOFTCAP or HAS_ENTROPY_GRAD or tile.dtype != torch.float32:
        return NotImplemented
    if not HAS_LOGPROB_GRAD:
        tile.zero_()
        return None
    scale = logit_scale * inv_t
    if scale != 1.0:
        tile.mul_(scale)
    # d(log p_target)/d(tile) = g * scale * (1[target] - p), p = exp(z - log_z), built in the tile itself
    tile.sub_(log_z.unsqueeze(-1)).exp_().mul_((-scale * grad_logprobs).unsqueeze(-1))
    local = targets - vocab_start
    rows = ((local >= 0) & (local < n_cols)).nonzero().squeeze(-1)
    tile.index_put_((rows, local[rows]), scale * grad_logprobs[rows], accumulate=True)
    return None
