"""QLoRA on the CPU, for real: ``model.quantization`` 4bit (NF4) and 8bit with bitsandbytes >= 0.50 under
``accelerate launch``; the adapter loads onto the full-precision base with plain peft and merges."""

from __future__ import annotations

import math
import re

import pytest
from conftest import RECIPE_MODULE, accelerate_cmd, offline_env, read_metrics, run

# bitsandbytes comes with the dev extra (through qlora), so CI runs the 4-bit case
pytest.importorskip("bitsandbytes", reason="bitsandbytes (pip install dpo-hub[qlora]) runs QLoRA on the CPU")

ARGS = ["--model", "embedded", "--data.limit", "24", "--dpo.max_steps", "2", "--dpo.max_length", "64"]
ARGS += ["--dpo.learning_rate", "1e-3"]


@pytest.fixture(scope="module", params=["4bit", pytest.param("8bit", marks=pytest.mark.scale_out)])
def quantized_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"qlora_{request.param}")
    out = tmp / "run"
    cmd = [*accelerate_cmd(), "-m", RECIPE_MODULE, "--output_dir", str(out), *ARGS]
    proc = run([*cmd, "--model.quantization", request.param], offline_env(tmp, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return request.param, out, proc


def test_base_really_quantized_and_smaller(quantized_run):
    from dpo_hub import embedded

    quantization, out, proc = quantized_run
    metrics = read_metrics(out)
    assert metrics["quantization"] == quantization and metrics["train"]["global_step"] == 2
    found = re.search(
        rf"model.quantization {quantization}: (\d+) bitsandbytes layer\(s\); .* take ([\d.]+) MB", proc.stdout
    )
    assert found, proc.stdout[-3000:]
    assert int(found[1]) == 8  # 2 blocks x (c_attn, attn c_proj, c_fc, mlp c_proj); lm_head stays full
    assert float(found[2]) < embedded.build_model().get_memory_footprint() / 2**20
    # the reference is the quantized base: before training the policy equals it, the loss is log 2
    assert metrics["eval_before"]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert (out / "comparison.json").is_file()  # base vs tuned compared on the quantized model
    rows = metrics["levers"]["trim_padding"]  # the lever itself saw the bitsandbytes layers
    assert not rows["active"] and rows["why"].startswith("bitsandbytes' Linear"), rows


def test_bitsandbytes_hub_kernel_request_kept_out_of_stderr(quantized_run):
    """bitsandbytes 0.50 on an AVX-512 BF16 CPU asks the Hub for a kernel as it is imported; offline it fails
    and warns. The run's stderr stays clean and the run's own log says what happened (runtime.py)."""
    from bitsandbytes.functional import has_avx512bf16

    _, _, proc = quantized_run
    assert "gemm_4bit_forward" not in proc.stderr and "publisher trust" not in proc.stderr, proc.stderr
    if has_avx512bf16():  # bitsandbytes' own test: it made the request, which fails offline (offline_env)
        assert "bitsandbytes said on import: Failed to load CPU gemm_4bit_forward" in proc.stdout


def test_bitsandbytes_import_errors_still_reach_the_log(caplog):
    import logging

    from dpo_hub import runtime

    kept: list[str] = []
    handler = runtime._KeepBelowError(kept)
    for level in (logging.WARNING, logging.ERROR):
        handler.handle(logging.LogRecord("bitsandbytes.x", level, __file__, 1, f"at {level}", None, None))
    assert kept == ["at 30"]
    assert [r.getMessage() for r in caplog.records] == ["at 40"]


def test_adapter_loads_onto_the_fp32_base_and_merges(quantized_run):
    import torch
    from peft import PeftModel

    from dpo_hub import embedded

    _, out, _ = quantized_run
    ids = torch.tensor([[464, 3290, 318, 257, 1332]])
    model = PeftModel.from_pretrained(embedded.build_model(), str(out))  # plain peft, fp32 base
    with torch.no_grad():
        tuned = model(ids).logits
        merged = model.merge_and_unload()(ids).logits
        base = embedded.build_model()(ids).logits
    assert torch.allclose(tuned, merged, atol=1e-4)
    assert (merged - base).abs().max() > 1e-5  # the trained adapter changes the fp32 model
