"""The backbone on the CPU: each row of a DPO batch at its own length, each pair's prompt computed once.

trl stacks a pair's chosen and rejected rows (chosen rows first, then rejected, pair ``i`` at rows ``i`` and
``i + batch``), pads them to the longer one and runs the whole prompt twice. Causal attention makes the hidden
states of a shared prefix the same in both rows, and those of real tokens independent of padding to their
right, so the wrapper here runs the chosen row at its own length and the rejected row's answer alone on the
chosen row's KV cache of the prompt (through which the rejected row's gradients flow back). Padding positions
get zeros, which trl never scores. Only trl's calls (``use_cache=False``, no extra outputs) change.
"""

from __future__ import annotations

import inspect
from typing import Any

from dpo_hub.training.levers import Lever

SHARED_PREFIX_MIN = 16  # shorter shared prompts are computed twice


def trim_padding(model: Any) -> tuple[Lever, tuple[Any, str, Any] | None]:
    """The lever's state, and ``(backbone, "forward", wrapper)`` for the trainer to set on ``model``'s
    backbone while it trains or evaluates (the backbone is looked up through peft's wrapper; nothing is
    changed here)."""
    plain = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(plain, "base_model", None)
    if backbone is None or backbone is plain:
        return Lever(False, f"{type(plain).__name__} has no separate backbone module"), None
    quantized = next((m for m in backbone.modules() if type(m).__module__.startswith("bitsandbytes")), None)
    if quantized is not None:  # model.quantization: Linear4bit/Linear8bitLt
        layer = type(quantized).__name__
        why = (
            f"bitsandbytes' {layer} (model.quantization) refuses the per-row KV-cache forward (in-place view)"
        )
        return Lever(False, why), None
    original = backbone.forward
    params = inspect.signature(type(backbone).forward).parameters
    cache_arg = next((name for name in ("cache", "past_key_values") if name in params), None)

    def forward(*args: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        lengths = _row_lengths(args, input_ids, attention_mask, kwargs)
        if lengths is None:
            named = {"input_ids": input_ids, "attention_mask": attention_mask}
            return original(*args, **{k: v for k, v in named.items() if v is not None}, **kwargs)
        return _forward_rows(original, cache_arg, input_ids, lengths)

    shared = (
        "each pair's prompt once on a KV cache" if cache_arg else "no KV cache argument: prompts run twice"
    )
    return Lever(True, f"each row at its own length; {shared}"), (backbone, "forward", forward)


def _row_lengths(args: tuple, input_ids: Any, attention_mask: Any, kwargs: dict) -> list[int] | None:
    """Each row's length when this is a call to change (trl's, right-padded, on the CPU), else None."""
    asked = {
        key for key, value in kwargs.items() if value is not None and value is not False
    }  # peft passes Nones
    if (
        args
        or input_ids is None
        or attention_mask is None
        or input_ids.dim() != 2
        or input_ids.size(0) < 2
        or input_ids.device.type != "cpu"
        or kwargs.get("use_cache") is not False
        or not asked <= {"return_dict"}
    ):
        return None
    lengths = attention_mask.sum(dim=1)
    ends = attention_mask.cumsum(dim=1).gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    if not bool((ends == lengths).all()) or not bool((lengths > 0).all()):
        return None  # not right-padded: left as it is
    return lengths.tolist()


def _forward_rows(original: Any, cache_arg: str | None, input_ids: Any, lengths: list[int]) -> Any:
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPast

    width, rows = input_ids.size(1), {}
    half = len(lengths) // 2 if len(lengths) % 2 == 0 else 0
    for a in range(half):
        b = a + half
        shared = _shared_prefix(input_ids[a, : lengths[a]], input_ids[b, : lengths[b]])
        if cache_arg and SHARED_PREFIX_MIN <= shared < min(lengths[a], lengths[b]):
            pair = _forward_pair(original, cache_arg, input_ids, (a, b), (lengths[a], lengths[b]), shared)
            if pair is not None:
                rows[a], rows[b] = pair
    for row, length in enumerate(lengths):
        if row not in rows:
            rows[row] = original(
                input_ids=input_ids[row : row + 1, :length], attention_mask=_ones(length), use_cache=False
            ).last_hidden_state
    padded = [
        torch.nn.functional.pad(rows[row], (0, 0, 0, width - rows[row].size(1)))
        for row in range(len(lengths))
    ]
    return BaseModelOutputWithPast(last_hidden_state=torch.cat(padded))


def _shared_prefix(a: Any, b: Any) -> int:
    n = min(a.numel(), b.numel())
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0, 0]) if differ.numel() else n


def _forward_pair(
    original: Any,
    cache_arg: str,
    input_ids: Any,
    rows: tuple[int, int],
    lengths: tuple[int, int],
    shared: int,
) -> tuple[Any, Any] | None:
    """Hidden states of rows ``a`` and ``b``, whose first ``shared`` tokens are the same: ``a`` runs whole and
    keeps its KV cache, ``b`` runs only its rest on the cache's first ``shared`` positions (two full-height
    matmul passes: a prefix run alone would be a short, slow one). None when the cache is not a plain one."""
    import torch
    from transformers.cache_utils import DynamicLayer

    (a, b), (length_a, length_b) = rows, lengths
    first = original(
        input_ids=input_ids[a : a + 1, :length_a], attention_mask=_ones(length_a), use_cache=True
    )
    cache = getattr(first, "cache", None) or getattr(first, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    for layer in layers:  # the prefix's keys and values: what b's own tokens attend to before themselves
        layer.keys, layer.values = layer.keys[..., :shared, :], layer.values[..., :shared, :]
    rest = original(
        input_ids=input_ids[b : b + 1, shared:length_b],
        attention_mask=_ones(length_b),
        use_cache=True,
        **{cache_arg: cache},
    ).last_hidden_state
    return first.last_hidden_state, torch.cat([first.last_hidden_state[:, :shared], rest], dim=1)


def _ones(length: int) -> Any:
    import torch

    return torch.ones(1, length, dtype=torch.long)
