"""Scoring preference pairs under a tuned PEFT model and its base (the adapter toggled off).

Pairs are scored like trl's ``DPOTrainer``: ``prompt``, ``prompt + chosen + eos`` and ``prompt +
rejected + eos`` are tokenised with the tokenizer's defaults; the response is what follows their
common prefix with the prompt; a sequence keeps its first ``max_length`` tokens; only response
tokens count (prompt and padding are masked). Each sequence gets one forward per model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from dpo_hub.data.pairs import Pair

log = logging.getLogger("dpo_hub")


def adapter_off(model: Any):
    """Context in which a PEFT model runs as its base model (no second copy of the weights)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


@dataclass
class PairScores:
    """Summed response log-probs per pair under each model, response lengths, KL on chosen responses."""

    tuned_chosen: list[float]
    tuned_rejected: list[float]
    base_chosen: list[float]
    base_rejected: list[float]
    chosen_tokens: list[int]
    rejected_tokens: list[int]
    chosen_kl: list[float]  # KL(tuned || base) summed over each chosen response's tokens
    skipped: int = 0  # pairs whose response was cut off entirely by max_length
    truncated: int = 0  # scored pairs with a sequence cut to max_length (scored on their first tokens)
    index: list[int] = field(default_factory=list)  # position of each scored pair in the input


def encode_pair(tokenizer: Any, pair: Pair, max_length: int | None = None) -> list[tuple[list[int], int]]:
    """``[(chosen ids, response start), (rejected ids, response start)]``, tokenised as trl does."""
    eos = tokenizer.eos_token or ""
    prompt = tokenizer(pair["prompt"])["input_ids"]
    full = [
        tokenizer(pair["prompt"] + r + ("" if r.endswith(eos) else eos))["input_ids"]
        for r in (pair["chosen"], pair["rejected"])
    ]
    start = min(_common_prefix(prompt, ids) for ids in full)
    return [(ids[:max_length] if max_length else ids, start) for ids in full]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.inference_mode()
def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Iterable[Pair],
    batch_size: int = 16,
    max_length: int | None = None,
    max_tokens: int = 4096,
) -> PairScores:
    """Score every pair under the tuned model and its base (adapter off), batched and right-padded.

    A forward holds up to ``batch_size`` pairs' sequences (chosen and rejected sorted together by length)
    and at most ``max_tokens`` padded tokens; ``max_length`` defaults to the model's context length.
    """
    max_length = max_length or context_length(model)
    whole = [encode_pair(tokenizer, p) for p in pairs]
    encoded = [[(ids[:max_length], start) for ids, start in e] for e in whole]
    index = [i for i, e in enumerate(encoded) if all(start < len(ids) for ids, start in e)]
    truncated = sum(any(len(ids) > max_length for ids, _ in whole[i]) for i in index)
    if truncated or len(index) < len(encoded):
        log.warning(
            "max_length %d: of %d pairs, %d are skipped (the prompt alone fills it) and %d truncated; a "
            "larger max_length (--max-length) scores them whole",
            max_length,
            len(encoded),
            len(encoded) - len(index),
            truncated,
        )
    kept = [encoded[i] for i in index]
    seqs = [e[0] for e in kept] + [e[1] for e in kept]
    unique: dict[tuple, int] = {}  # a chosen answer shared by several pairs of one question is scored once
    slot = [unique.setdefault((tuple(ids), start), len(unique)) for ids, start in seqs]
    distinct = [(list(ids), start) for ids, start in unique]
    scored = torch.zeros(4, len(distinct), dtype=torch.float64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        for batch in _batches([len(ids) for ids, _ in distinct], 2 * batch_size, max_tokens):
            scored[:, batch] = _score_batch(model, [distinct[j] for j in batch], pad_id)
    finally:
        model.train(was_training)
    n = len(kept)
    t, b, tokens, kl = scored[:, slot].tolist()
    return PairScores(
        t[:n],
        t[n:],
        b[:n],
        b[n:],
        [int(x) for x in tokens[:n]],
        [int(x) for x in tokens[n:]],
        kl[:n],
        skipped=len(encoded) - n,
        truncated=truncated,
        index=index,
    )


def _batches(lengths: list[int], size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped by length (less padding): at most ``size`` sequences and ``max_tokens`` padded
    tokens."""
    batches: list[list[int]] = []
    for j in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batches and len(batches[-1]) < size and (len(batches[-1]) + 1) * lengths[j] <= max_tokens:
            batches[-1].append(j)
        else:
            batches.append([j])
    return batches


HEAD_CHUNK = 256  # positions projected onto the vocabulary at a time: 256 x 50,257 fp32 logits are ~50 MB


def _score_batch(model: Any, seqs: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Rows: tuned log-prob sum, base log-prob sum, response tokens, KL(tuned||base) sum; one column a
    sequence.

    Only response positions reach the output layer, ``HEAD_CHUNK`` at a time: a batch x length x vocabulary
    logits tensor is never held whole.
    """
    device = next(model.parameters()).device
    ids = torch.full((len(seqs), max(len(s) for s, _ in seqs)), pad_id, dtype=torch.long)
    mask, response = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
    for row, (seq, start) in enumerate(seqs):
        ids[row, : len(seq)], mask[row, : len(seq)], response[row, start : len(seq)] = (
            torch.tensor(seq),
            1,
            True,
        )
    ids, mask, scored = ids.to(device), mask.to(device), response[:, 1:].to(device)  # position t predicts t+1
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    plain = _plain_head(model)
    head = inner.get_output_embeddings() if plain else torch.nn.Identity()  # else: the model's own logits

    def hidden() -> torch.Tensor:  # the decoder's last hidden states at scored positions (LoRA layers inside)
        if not plain:
            return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1][scored]
        return inner.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[
            :, :-1
        ][scored]

    tuned_hidden = hidden()
    with adapter_off(model):
        base_hidden = hidden()
    targets = ids[:, 1:][scored].unsqueeze(-1)
    per_token = torch.zeros(3, len(targets), dtype=torch.float64, device=device)
    for at in range(0, len(targets), HEAD_CHUNK):
        part = slice(at, at + HEAD_CHUNK)
        tuned = torch.log_softmax(head(tuned_hidden[part]).float(), dim=-1)
        with adapter_off(model):
            base = torch.log_softmax(head(base_hidden[part]).float(), dim=-1)
        per_token[0, part] = tuned.gather(-1, targets[part])[:, 0].double()
        per_token[1, part] = base.gather(-1, targets[part])[:, 0].double()
        per_token[2, part] = torch.linalg.vecdot(tuned.exp(), tuned - base).double()  # KL(tuned || base)
    rows = scored.nonzero()[:, 0]
    out = torch.zeros(4, len(seqs), dtype=torch.float64, device=device)
    for k, value in enumerate((per_token[0], per_token[1], torch.ones_like(per_token[0]), per_token[2])):
        out[k].index_add_(0, rows, value)
    return out.cpu()


def _plain_head(model: Any) -> bool:
    """Whether logits are exactly the output layer applied to the decoder's last hidden states."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    scaled = any(
        getattr(config, name, None) not in (None, 1, 1.0)
        for name in (
            "final_logit_softcapping",
            "logit_scale",
            "output_multiplier",
            "lm_head_multiplier",
            "logits_scaling",
        )
    )
    return not scaled and inner.get_output_embeddings() is not None and inner.base_model is not inner


def context_length(model: Any) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
