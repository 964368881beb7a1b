"""Pre-screen of two issue-23 levers on one SmolLM2-360M decoder layer, as a bf16 step of dpo_hub runs it: CPU
bf16 autocast, the frozen weights stored in bf16 (``dpo.bf16_base_weights``), peft LoRA r 8 on every linear
(the ``all_linear`` preset), dropout off, forward then backward to the input and the LoRA weights.

* **Fused LoRA matmuls.** ``layer_lora`` against ``layer_no_lora`` (the same layer without adapters, its input
  still needing a gradient): what every LoRA branch of the layer costs together, so the most that fusing them
  could save. Then q/k/v alone, as peft runs them (three LoRA-A matmuls on the same input) against one fused
  LoRA-A matmul whose output is split to the three LoRA-Bs (``qkv_peft`` vs ``qkv_fused_a``).
  Also each LoRA branch's scaling and sum folded into one ``addmm`` (``layer_lora_addmm``).
* **torch.compile with length bucketing.** ``layer_lora`` eager against the same module under
  ``torch.compile(dynamic=False)`` at this one length (what a bucket would run): the speed-up per call, the
  compile time of one shape, and how many calls a bucket needs to pay its compile back; and
  ``torch.compile(dynamic=True)``, compiled at another length first (one graph for every length, no buckets);
  and two narrower scopes that would avoid compiling the KV-cache update of ``trim_padding``: the MLP alone,
  and the block compiled around an eager attention.

Variants alternate round by round; each figure is the median of ``--repeats``. Run:
    python benchmarks/lora_layer_levers.py [--batch 2] [--rows 1024] [--repeats 7] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

DIMS = dict(hidden_size=960, intermediate_size=2560, num_attention_heads=15, num_key_value_heads=5)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 8


class Layer(torch.nn.Module):
    """One Llama decoder layer with its rotary embedding, causal attention (sdpa)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        config = LlamaConfig(**DIMS, num_hidden_layers=1, rope_theta=100000.0, max_position_embeddings=8192)
        config._attn_implementation = "sdpa"
        self.layer = LlamaDecoderLayer(config, layer_idx=0)
        self.rotary = LlamaRotaryEmbedding(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1]).unsqueeze(0)
        out = self.layer(x, position_embeddings=self.rotary(x, positions))
        return out[0] if isinstance(out, tuple) else out


class QkvPeft(torch.nn.Module):
    """q, k and v projections of the layer, each a peft LoRA layer (three LoRA-A matmuls on one input)."""

    def __init__(self) -> None:
        super().__init__()
        heads, kv = DIMS["num_attention_heads"], DIMS["num_key_value_heads"]
        width, head = DIMS["hidden_size"], DIMS["hidden_size"] // DIMS["num_attention_heads"]
        self.q_proj = torch.nn.Linear(width, heads * head, bias=False)
        self.k_proj = torch.nn.Linear(width, kv * head, bias=False)
        self.v_proj = torch.nn.Linear(width, kv * head, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)


class QkvFusedA(torch.nn.Module):
    """The same projections and LoRA weights with one fused LoRA-A matmul, split to the three LoRA-Bs."""

    def __init__(self, peft_qkv: QkvPeft) -> None:
        super().__init__()
        projections = [peft_qkv.q_proj, peft_qkv.k_proj, peft_qkv.v_proj]
        self.bases = torch.nn.ModuleList([p.base_layer for p in projections])
        self.a = torch.nn.Parameter(torch.cat([p.lora_A["default"].weight.detach() for p in projections]))
        self.bs = torch.nn.ParameterList([p.lora_B["default"].weight.detach().clone() for p in projections])
        self.scaling = projections[0].scaling["default"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = (x @ self.a.t()).split(RANK, dim=-1)
        outs = [base(x) + (h @ b.t()) * self.scaling for base, h, b in zip(self.bases, low, self.bs)]
        return torch.cat(outs, dim=-1)


def with_lora(module: torch.nn.Module, targets: list[str]) -> torch.nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=RANK, lora_alpha=16, lora_dropout=0.0, target_modules=targets)
    module = inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)
    for name, param in module.named_parameters():  # LoRA-B starts at zero: values, as after a few steps
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    return module


def addmm_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft LoRA Linear's forward with the scaling and the sum folded into one ``addmm`` (dropout off)."""
    result = self.base_layer(x)
    low = x.reshape(-1, x.shape[-1]) @ self.lora_A["default"].weight.t()
    flat = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        low,
        self.lora_B["default"].weight.t(),
        alpha=self.scaling["default"],
    )
    return flat.reshape(result.shape)


def frozen_to_bf16(module: torch.nn.Module) -> torch.nn.Module:
    """``bf16_base_weights``: the frozen Linear weights stored in bf16 (LoRA stays fp32)."""
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and "lora_" not in name:
            sub.weight.data = sub.weight.data.to(torch.bfloat16)
    return module


def step(module: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    out.float().pow(2).mean().backward()
    for param in module.parameters():
        param.grad = None
    x.grad = None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1024, help="sequence length (tokens per sequence)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, batch "
        f"{args.batch} x {args.rows} tokens, SmolLM2-360M layer, LoRA r {RANK} on {len(TARGETS)} linears"
    )

    plain = frozen_to_bf16(Layer().requires_grad_(False))
    lora = frozen_to_bf16(with_lora(Layer(), TARGETS))
    lora.load_state_dict(plain.state_dict(), strict=False)
    lora_addmm = frozen_to_bf16(with_lora(Layer(), TARGETS))
    lora_addmm.load_state_dict(lora.state_dict())
    for sub in lora_addmm.modules():
        if hasattr(sub, "lora_A"):
            sub.forward = addmm_forward.__get__(sub)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        probe = torch.randn(1, 16, DIMS["hidden_size"])
        assert torch.allclose(lora(probe).float(), lora_addmm(probe).float(), atol=5e-2), "addmm differs"
    qkv_peft = frozen_to_bf16(with_lora(QkvPeft(), ["q_proj", "k_proj", "v_proj"]))
    qkv_fused = QkvFusedA(qkv_peft)
    x = torch.randn(args.batch, args.rows, DIMS["hidden_size"], requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.allclose(qkv_peft(x).float(), qkv_fused(x).float(), atol=2e-2), "fused q/k/v differ"
    variants = {
        "layer_lora": lambda: step(lora, x),
        "layer_no_lora": lambda: step(plain, x),
        "layer_lora_addmm": lambda: step(lora_addmm, x),
        "qkv_peft": lambda: step(qkv_peft, x),
        "qkv_fused_a": lambda: step(qkv_fused, x),
    }
    compile_s = None
    if not args.no_compile:
        compiled = torch.compile(lora, dynamic=False)
        compile_s = timed(lambda: step(compiled, x))  # the first call compiles forward and backward
        variants["layer_lora_compiled"] = lambda: step(compiled, x)
        dynamic = torch.compile(lora, dynamic=True)  # one graph for every length: no buckets needed
        other = torch.randn(args.batch, args.rows // 2 + 3, DIMS["hidden_size"], requires_grad=True)
        dynamic_s = timed(lambda: step(dynamic, other))  # compiled at another length first
        variants["layer_lora_compiled_dynamic"] = lambda: step(dynamic, x)
        mlp_only = with_lora(Layer(), TARGETS)  # what dpo.compile_blocks compiles: the MLP, no KV cache
        mlp_only.load_state_dict(lora.state_dict())
        mlp_only = frozen_to_bf16(mlp_only)
        mlp_only.layer.mlp.forward = torch.compile(mlp_only.layer.mlp.forward, dynamic=True)
        step(mlp_only, other)
        variants["layer_lora_mlp_compiled"] = lambda: step(mlp_only, x)
        no_attn = with_lora(Layer(), TARGETS)  # the block compiled around an eager attention (its KV cache)
        no_attn.load_state_dict(lora.state_dict())
        no_attn = frozen_to_bf16(no_attn)
        no_attn.layer.self_attn.forward = torch.compiler.disable(no_attn.layer.self_attn.forward)
        no_attn.layer.forward = torch.compile(no_attn.layer.forward, dynamic=True)
        step(no_attn, other)
        variants["layer_lora_compiled_eager_attention"] = lambda: step(no_attn, x)
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(timed(variants[name]))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    for name, value in ms.items():
        print(f"{name:22s} {value:9.1f} ms per forward+backward")
    lora_share = 1 - ms["layer_no_lora"] / ms["layer_lora"]
    print(f"LoRA branches: {100 * lora_share:.1f}% of the layer's time (the most fusing them could save)")
    print(
        f"LoRA scaling and sum in one addmm: {ms['layer_lora'] / ms['layer_lora_addmm']:.2f}x peft's forward"
    )
    print(f"q/k/v with one fused LoRA-A: {ms['qkv_peft'] / ms['qkv_fused_a']:.2f}x peft's three")
    if compile_s is not None:
        saved = (ms["layer_lora"] - ms["layer_lora_compiled"]) / 1000
        print(
            f"torch.compile: {ms['layer_lora'] / ms['layer_lora_compiled']:.2f}x eager per call; "
            f"compile of one shape {compile_s:.1f} s (first call, forward+backward)"
        )
        print(
            f"torch.compile(dynamic=True): {ms['layer_lora'] / ms['layer_lora_compiled_dynamic']:.2f}x eager "
            f"per call; compile {dynamic_s:.1f} s, then no recompile for other lengths"
        )
        print(f"MLP alone compiled (dynamic): {ms['layer_lora'] / ms['layer_lora_mlp_compiled']:.2f}x eager")
        print(
            f"block compiled around an eager attention: "
            f"{ms['layer_lora'] / ms['layer_lora_compiled_eager_attention']:.2f}x eager"
        )
        if saved > 0:
            calls = compile_s / saved
            print(
                f"  one bucket pays its compile back after {calls:.0f} calls of this shape ({calls / 32:.0f} "
                "steps of SmolLM2-360M's 32 layers, policy only)"
            )
        else:
            print("  no call is faster: a bucket never pays its compile back")


if __name__ == "__main__":
    main()
