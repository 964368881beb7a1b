"""The CPU levers compute what trl's own code computes: in-place logit tiles, shared prompts, trimmed rows."""

from __future__ import annotations

import contextlib

import pytest
import torch
from trl.kernels import chunked_logprob

from dpo_hub import embedded, upstream
from dpo_hub.training.levers import cpu_head, cpu_rows

OUTPUT_SETS = [
    ("log_probs",),
    ("log_probs", "entropy", "mean_logits", "is_top1"),
    ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"),
]


def head_case(seed: int = 0):
    """Hidden states, a head with duplicated rows (tied logits) and targets that hit every top-1 case."""
    g = torch.Generator().manual_seed(seed)
    vocab, hidden, tokens = 1000, 32, 40
    weight = torch.randn(vocab, hidden, generator=g)
    weight[700] = weight[100]  # a tie across tiles: 100 comes first
    weight[110] = weight[100] * 1.0  # and a tie inside 100's tile
    states = torch.randn(tokens, hidden, generator=g)
    states[:8] = weight[100] * 3  # 100 (and its copies) are these rows' argmax
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    targets[:8] = torch.tensor([100, 700, 110, 99, 999, 0, 100, 700])
    best = (states @ weight.t()).argmax(-1)
    targets[8:14] = best[8:14]  # untied top-1 hits, wherever they fall
    targets[14] = vocab - 1  # the last, partial tile
    return states, weight, targets


def run_head(states, weight, targets, outputs, logit_scale, entropy_grad=False):
    hidden = states.clone().requires_grad_(True)
    head = weight.clone().requires_grad_(True)
    result = chunked_logprob.ChunkedLogProbFunction.apply(
        hidden, head, None, targets, 0.7, 256, None, logit_scale, outputs
    )
    g = torch.Generator().manual_seed(1)
    loss = (result[0] * torch.randn(result[0].shape, generator=g)).sum()
    if entropy_grad:
        loss = loss + result[1].sum()
    loss.backward()
    return [x for x in result if x is not None], hidden.grad, head.grad


def lean_folds():
    """The lean folds set in trl's module, as the trainer sets them while it trains (restored on exit)."""
    lever, patches = cpu_head._lean_folds()
    assert lever.active, lever.why
    stack = contextlib.ExitStack()
    for private, value in patches:
        stack.enter_context(upstream.patched(private, value))
    return stack


@pytest.mark.parametrize("outputs", OUTPUT_SETS)
@pytest.mark.parametrize("logit_scale", [1.0, 0.5])
def test_lean_tile_folds_give_trls_statistics_and_gradients(outputs, logit_scale):
    trl_forward = chunked_logprob._forward_tile
    case = head_case()
    with lean_folds():
        assert chunked_logprob._forward_tile is not trl_forward
        lean = run_head(*case, outputs, logit_scale)
    assert chunked_logprob._forward_tile is trl_forward, "trl's own fold is back after the block"
    trls = run_head(*case, outputs, logit_scale)
    for got, expected in zip(lean[0], trls[0]):
        assert got.dtype == expected.dtype
        assert torch.allclose(got.float(), expected.float(), atol=1e-5, rtol=1e-5)
    if "is_top1" in outputs:
        top1 = lean[0][-1]
        assert top1[:8].tolist() == [True, False, False, False, False, False, True, False]
        assert top1[8:14].all()
    for got, expected in zip(lean[1:], trls[1:]):
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_entropy_gradients_keep_trls_backward():
    case = head_case(seed=3)
    outputs = ("log_probs", "entropy")
    with lean_folds():
        with_entropy = run_head(*case, outputs, 1.0, entropy_grad=True)
        without = run_head(*case, outputs, 1.0)
    assert not torch.allclose(with_entropy[1], without[1]), "the entropy term reached the gradient"


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50257,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


def trimmed(backbone):
    """The forward trim_padding makes for ``backbone`` (which the trainer sets only while it trains)."""
    lever, (owner, name, forward) = cpu_rows.trim_padding(type("M", (), {"base_model": backbone})())
    assert lever.active and owner is backbone and name == "forward"
    return forward


def test_trim_padding_off_on_a_bitsandbytes_backbone():
    """A quantized base (model.quantization) turns the lever off by itself, naming the layer."""
    pytest.importorskip("bitsandbytes")
    from dpo_hub.config.model import ModelSpec
    from dpo_hub.sources.models import load_model

    lever, wrapper = cpu_rows.trim_padding(load_model(ModelSpec(name=embedded.EMBEDDED, quantization="4bit")))
    assert not lever.active and wrapper is None
    assert lever.why.startswith("bitsandbytes' Linear4bit (model.quantization) refuses"), lever.why
    assert cpu_rows.trim_padding(embedded.build_model())[0].active  # the same model unquantized: on


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def backbone(request):
    """The embedded GPT-2 (learned positions) and a tiny Llama (rotary positions, grouped KV heads)."""
    model = embedded.build_model() if request.param == "gpt2" else tiny_llama()
    model.eval()
    return model.base_model


def dpo_rows(shared: int, lengths: tuple[int, int, int, int]):
    """Two pairs as trl stacks them (chosen 0, 1 then rejected 0, 1), each pair sharing ``shared`` tokens,
    padded."""
    g = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width, dtype=torch.long)
    prompts = [torch.randint(0, 50257, (shared,), generator=g) for _ in range(2)]
    for row, length in enumerate(lengths):
        ids[row, :shared] = prompts[row % 2]
        ids[row, shared:length] = torch.randint(0, 50257, (length - shared,), generator=g)
        mask[row, :length] = 1
    return ids, mask


@pytest.mark.parametrize("shared_min", [1, 10_000], ids=["prompt once", "rows only"])
def test_rows_at_own_length_and_shared_prompts_give_the_same_hidden_states(backbone, shared_min, monkeypatch):
    monkeypatch.setattr(cpu_rows, "SHARED_PREFIX_MIN", shared_min)
    ids, mask = dpo_rows(shared=9, lengths=(20, 14, 31, 14))
    seen = []
    hook = backbone.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0].numel())
    )
    try:
        with torch.no_grad():
            plain = type(backbone).forward(backbone, input_ids=ids, attention_mask=mask, use_cache=False)
            seen.clear()
            got = trimmed(backbone)(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        hook.remove()
    real = mask.bool()
    assert torch.allclose(got.last_hidden_state[real], plain.last_hidden_state[real], atol=1e-5)
    assert not got.last_hidden_state[~real].any()
    # the model embedded only real tokens, and each pair's 9-token prompt once when shared
    assert sum(seen) == int(mask.sum()) - (2 * 9 if shared_min == 1 else 0)


def test_shared_prompt_passes_gradients_to_both_answers(backbone, monkeypatch):
    monkeypatch.setattr(cpu_rows, "SHARED_PREFIX_MIN", 1)
    ids, mask = dpo_rows(shared=7, lengths=(12, 16, 18, 9))
    weight = backbone.get_input_embeddings().weight
    grads = []
    for forward in (trimmed(backbone), backbone.forward):
        out = forward(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        loss = (out * mask[..., None]).pow(2).sum()
        grads.append(torch.autograd.grad(loss, weight)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_calls_that_are_not_trls_are_left_alone(backbone):
    ids, mask = dpo_rows(shared=5, lengths=(8, 8, 8, 8))
    assert cpu_rows._row_lengths((), ids, mask, {"use_cache": False}) == [8, 8, 8, 8]
    assert cpu_rows._row_lengths((), ids, mask, {"use_cache": True}) is None  # generation
    assert cpu_rows._row_lengths((), ids, mask, {"use_cache": False, "output_hidden_states": True}) is None
    left_padded = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert cpu_rows._row_lengths((), ids[:2, :3], left_padded, {"use_cache": False}) is None
