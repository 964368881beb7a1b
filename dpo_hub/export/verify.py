"""The export checks its own result: the GGUF loaded back by transformers (de-quantised) against the
merged model it was written from, next-token log-probs on a few prompts, a tolerance per GGUF type.

Figures: the largest and mean absolute difference of the log-probability of the merged model's top
``TOP_K`` next tokens at every prompt position, and the share of positions whose top-1 token agrees.
The tokenizer stored in the GGUF must give the same token ids as the merged model's. A figure over its
tolerance is an ``ExportError``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpo_hub.errors import ExportError

TOP_K = 10  # the next tokens whose log-probs are compared at each position
# largest |log p(gguf) - log p(merged)| allowed over the TOP_K next tokens (nats); f32 is bit-exact or close
TOLERANCES = {"f32": 1e-3, "f16": 0.05, "bf16": 0.2, "q8_0": 0.5}
PROMPTS = (
    "Is eating animals cruel?",
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):",
)


@dataclass(frozen=True)
class Verification:
    """How closely the GGUF computes what the merged model computes."""

    gguf_type: str
    prompts: int
    positions: int
    max_abs_logprob_diff: float  # over the merged model's top-k next tokens, every position
    mean_abs_logprob_diff: float
    top1_agreement: float  # share of positions with the same most likely next token
    tolerance: float
    top_k: int = TOP_K

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return format_verification(self.as_dict())


def format_verification(check: dict[str, Any]) -> str:
    """One line: the verification figures (as ``export.json`` stores them)."""
    return (
        f"verified: GGUF {check['gguf_type']} vs merged model on {check['prompts']} prompts "
        f"({check['positions']} positions): max |d log p| {check['max_abs_logprob_diff']:.2e} nats "
        f"(tolerance {check['tolerance']:g}), mean {check['mean_abs_logprob_diff']:.2e}, top-1 agreement "
        f"{check['top1_agreement']:.1%}"
    )


def verify_gguf(
    gguf_file: Path, merged_dir: Path, gguf_type: str, prompts: tuple[str, ...] | None = None
) -> Verification:
    """Compare ``gguf_file`` (loaded by transformers) with the model in ``merged_dir``; ``ExportError`` when
    a log-prob differs by more than ``TOLERANCES[gguf_type]`` or the tokenizers disagree."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = tuple(prompts or PROMPTS)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
        ).eval()
        gguf_tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ExportError(
            f"{gguf_file.name}: transformers cannot load the GGUF back ({type(err).__name__}: {err}); the "
            "export is not usable and was not kept"
        ) from err
    diffs, agree, positions = [], 0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        theirs = gguf_tokenizer(text, return_tensors="pt").input_ids
        if ids.tolist() != theirs.tolist():
            raise ExportError(
                f"{gguf_file.name}: its tokenizer splits {text!r} into {theirs.tolist()[0]}, the merged "
                "model's "
                f"into {ids.tolist()[0]}; the GGUF would answer differently, so it was not kept"
            )
        with torch.no_grad():
            want = merged(ids).logits.float().log_softmax(-1)[0]
            got = loaded(ids).logits.float().log_softmax(-1)[0]
        top = want.topk(TOP_K, dim=-1).indices
        diffs.append((want.gather(-1, top) - got.gather(-1, top)).abs())
        agree += int((want.argmax(-1) == got.argmax(-1)).sum())
        positions += ids.shape[1]
    every = torch.cat(diffs)
    result = Verification(
        gguf_type=gguf_type,
        prompts=len(texts),
        positions=positions,
        max_abs_logprob_diff=float(every.max()),
        mean_abs_logprob_diff=float(every.mean()),
        top1_agreement=agree / positions,
        tolerance=TOLERANCES[gguf_type],
    )
    if not result.max_abs_logprob_diff <= result.tolerance:
        raise ExportError(
            f"{gguf_file.name} failed its check: {result.summary()}. The GGUF does not compute what the "
            "tuned model computes, so it was not kept."
        )
    return result
