"""Scoring preference pairs under a tuned PEFT model and its base (the adapter toggled off).

Pairs are scored like trl's ``DPOTrainer``: ``prompt``, ``prompt + chosen + eos`` and ``prompt +
rejected + eos`` are tokenised with the tokenizer's defaults; the response is what follows their
common prefix with the prompt; a sequence keeps its first ``max_length`` tokens; only response
tokens count (prompt and padding are masked). Each sequence gets one forward per model, in the caller's
precision (a training run scores under its trainer's autocast, :mod:`dpo_hub.training.evaluation`). Base
log-probs already known for exactly these sequences (a run's reference log-probs) replace the base forward of
rejected answers; chosen answers still get one, for KL(tuned || base).
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


Sequence = tuple[list[int], int]  # token ids, index of the first response token
ROWS = ("tuned", "base", "tokens", "kl", "entropy", "mean_logit", "top1")  # _score_batch's rows, per sequence


@dataclass
class PairScores:
    """Summed response log-probs per pair under each model, response lengths, KL on chosen responses, and the
    tuned model's per-token statistics trl's eval logs (summed over each response)."""

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
    chosen_entropy: list[float] = field(default_factory=list)  # tuned entropy, summed over the response
    rejected_entropy: list[float] = field(default_factory=list)
    chosen_mean_logit: list[float] = field(default_factory=list)  # mean over the vocabulary, summed likewise
    rejected_mean_logit: list[float] = field(default_factory=list)
    chosen_top1: list[int] = field(default_factory=list)  # response tokens that are the tuned model's argmax
    precision: str = "fp32"  # of the forward passes (``pass_precision``)
    base_from: str = "base forward"  # or where known base log-probs came from (``score_sequences``)


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
    kept = [(encoded[i][0], encoded[i][1]) for i in index]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = score_sequences(model, kept, pad_id, batch_size, max_tokens)
    scores.skipped, scores.truncated, scores.index = len(encoded) - len(kept), truncated, index
    return scores


@torch.inference_mode()
def score_sequences(
    model: Any,
    pairs: list[tuple[Sequence, Sequence]],
    pad_id: int,
    batch_size: int = 16,
    max_tokens: int = 4096,
    reference: list[tuple[float, float]] | None = None,
    reference_from: str = "",
) -> PairScores:
    """Score tokenised (chosen, rejected) pairs under the tuned model and its base, in the caller's precision.

    ``reference``: the base log-probs of each pair, known already for exactly these sequences (a run's
    reference log-probs, from ``reference_from``); they are the base column, rejected answers get no base
    forward, and chosen answers get one only for KL(tuned || base).
    """
    if reference is not None and len(reference) != len(pairs):
        raise ValueError(f"{len(reference)} reference values for {len(pairs)} pairs")
    n = len(pairs)
    seqs = [p[0] for p in pairs] + [p[1] for p in pairs]
    unique: dict[tuple, int] = {}  # a chosen answer shared by several pairs of one question is scored once
    slot = [unique.setdefault((tuple(ids), start), len(unique)) for ids, start in seqs]
    distinct = [(list(ids), start) for ids, start in unique]
    with_base = [False] * len(distinct)
    for i, s in enumerate(slot):
        with_base[s] |= reference is None or i < n  # with a reference: a base forward for KL on chosen only
    scored = torch.zeros(len(ROWS), len(distinct), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for base in (True, False):
            group = [j for j in range(len(distinct)) if with_base[j] == base]
            for batch in _batches([len(distinct[j][0]) for j in group], 2 * batch_size, max_tokens):
                columns = [group[k] for k in batch]
                scored[:, columns] = _score_batch(model, [distinct[j] for j in columns], pad_id, base)
    finally:
        model.train(was_training)
    t, b, tokens, kl, entropy, mean_logit, top1 = scored[:, slot].tolist()
    base_chosen, base_rejected = (
        (b[:n], b[n:]) if reference is None else ([r[0] for r in reference], [r[1] for r in reference])
    )
    return PairScores(
        t[:n],
        t[n:],
        base_chosen,
        base_rejected,
        [int(x) for x in tokens[:n]],
        [int(x) for x in tokens[n:]],
        kl[:n],
        index=list(range(n)),
        chosen_entropy=entropy[:n],
        rejected_entropy=entropy[n:],
        chosen_mean_logit=mean_logit[:n],
        rejected_mean_logit=mean_logit[n:],
        chosen_top1=[int(x) for x in top1[:n]],
        precision=pass_precision(model),
        base_from="base forward (adapter off)"
        if reference is None
        else f"{reference_from or 'known base log-probs'}; KL from a base forward on chosen answers",
    )


def pass_precision(model: Any) -> str:
    """The precision forward passes of ``model`` run in here: ``bf16 autocast`` (or fp16) or its weights'."""
    device = next(model.parameters()).device.type
    if torch.is_autocast_enabled(device):
        return f"{_short(torch.get_autocast_dtype(device))} autocast"
    return _short(next(model.parameters()).dtype)


def _short(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)


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


def _score_batch(model: Any, seqs: list[Sequence], pad_id: int, base: bool = True) -> torch.Tensor:
    """One column a sequence, one row per ``ROWS``: tuned log-prob sum, base log-prob sum (0 without
    ``base``), response tokens, KL(tuned||base) sum (0 without ``base``), and the tuned model's entropy,
    mean logit and argmax hits, summed over the response (trl's ``entropy``, ``mean_logits``, ``is_top1``).

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
    if base:
        with adapter_off(model):
            base_hidden = hidden()
    targets = ids[:, 1:][scored].unsqueeze(-1)
    per_token = torch.zeros(len(ROWS), len(targets), dtype=torch.float64, device=device)
    per_token[2] = 1
    exact = torch.autocast(device.type, enabled=False)  # the head in the caller's precision, the rest in fp32
    for at in range(0, len(targets), HEAD_CHUNK):
        part = slice(at, at + HEAD_CHUNK)
        logits = head(tuned_hidden[part]).float()
        if base:
            with adapter_off(model):
                base_logits = head(base_hidden[part]).float()
        with exact:
            tuned = torch.log_softmax(logits, dim=-1)
            probs = tuned.exp()
            per_token[0, part] = tuned.gather(-1, targets[part])[:, 0].double()
            per_token[4, part] = -torch.linalg.vecdot(probs, tuned).double()  # entropy
            per_token[5, part] = logits.mean(-1).double()
            per_token[6, part] = (logits.argmax(-1) == targets[part][:, 0]).double()
            if base:
                base_logp = torch.log_softmax(base_logits, dim=-1)
                per_token[1, part] = base_logp.gather(-1, targets[part])[:, 0].double()
                per_token[3, part] = torch.linalg.vecdot(probs, tuned - base_logp).double()  # KL
    rows = scored.nonzero()[:, 0]
    out = torch.zeros(len(ROWS), len(seqs), dtype=torch.float64, device=device)
    out.index_add_(1, rows, per_token)
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
