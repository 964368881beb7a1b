"""DeepSpeed ZeRO-2 on the CPU, for real: ``accelerate launch --config_file
accelerate_configs/deepspeed_zero2_cpu.yaml`` (2 gloo ranks, deepspeed's CPU accelerator) against one process
with the same effective batch (``cpu.yaml``, per-device batch 2).

In CI (deepspeed is in dev). The first CPU run on a machine JIT-builds deepspeed's shared-memory all-reduce op
with ninja and a C++ compiler (~100 s on 2 cores); later runs load it from ~/.cache/torch_extensions.

Tolerances: both runs are fp32 on the same pairs in the same order; ZeRO-2 keeps the whole base on each rank
and averages the two ranks' LoRA gradients, so they differ only in summation order. Measured: eval loss and
reward margins equal to the 6 digits metrics.json keeps, reference log-probs within 1e-9, each LoRA update
B@A within 1e-6 (relative). The bounds are those of tests/test_fsdp_cpu.py for the metrics and 1e-3 for the
updates; a reference equal to the policy zeroes the margins and moves the reference log-probs by ~0.03.
"""

from __future__ import annotations

import pytest
from conftest import RECIPE_MODULE, accelerate_cmd, offline_env, read_metrics, run

pytest.importorskip("deepspeed", reason="deepspeed (pip install 'dpo-hub[deepspeed]') runs ZeRO on the CPU")

ARGS = [
    "--model", "embedded", "--data.limit", "24", "--dpo.max_steps", "4", "--dpo.max_length", "64",
    "--dpo.learning_rate", "1e-3", "--dpo.logging_steps", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same recipe on 2 ZeRO-2 ranks (batch 1 each) and on 1 process (batch 2)."""
    tmp = tmp_path_factory.mktemp("deepspeed_cpu")
    results = {}
    for name, config, extra in (
        ("zero2", "deepspeed_zero2_cpu.yaml", []),
        ("single", "cpu.yaml", ["--dpo.per_device_train_batch_size", "2"]),
    ):
        out = tmp / name
        env = offline_env(tmp, CUDA_VISIBLE_DEVICES="")
        proc = run(
            [*accelerate_cmd(config), "-m", RECIPE_MODULE, "--output_dir", str(out), *ARGS, *extra],
            env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results[name] = (out, proc)
    return results


def test_runs_as_deepspeed_zero2(runs):
    out, proc = runs["zero2"]
    distributed = read_metrics(out)["distributed"]
    assert {k: distributed[k] for k in ("type", "processes", "machines", "sharded")} == {
        "type": "DEEPSPEED",
        "processes": 2,
        "machines": 1,
        "sharded": False,  # ZeRO-2 shards gradients and optimizer state, not the base
    }
    assert len(distributed["peak_memory_mb"]) == 2 and "ru_maxrss" in distributed["peak_memory_of"]
    assert "[dpo_hub] DeepSpeed ZeRO-2 on the CPU over 2 gloo processes" in proc.stdout
    assert "all_gather_into_tensor` is deprecated" not in proc.stderr  # deepspeed's call: known noise


def test_same_steps_eval_margins_and_reference_as_one_process(runs):
    zero2, single = (read_metrics(runs[n][0]) for n in ("zero2", "single"))
    assert zero2["train"]["global_step"] == single["train"]["global_step"] == 4
    assert zero2["effective_batch_size"] == single["effective_batch_size"] == 2
    assert zero2["eval_after"]["eval_loss"] == pytest.approx(single["eval_after"]["eval_loss"], abs=1e-5)
    margin = single["eval_after"]["eval_rewards/margins"]
    assert margin > 1e-3  # the adapter moved: the comparison below means something
    assert zero2["eval_after"]["eval_rewards/margins"] == pytest.approx(margin, abs=5e-5)
    assert zero2["levers"]["reference_cache"]["active"] is False  # trl computes the reference every step
    beta = 0.1
    for side in ("chosen", "rejected"):  # reward = beta * (policy - reference): the reference is the base
        got, want = ([e for e in m["log_history"] if "eval_logps/chosen" in e][-1] for m in (zero2, single))
        reference = got[f"eval_logps/{side}"] - got[f"eval_rewards/{side}"] / beta
        assert reference == pytest.approx(
            want[f"eval_logps/{side}"] - want[f"eval_rewards/{side}"] / beta, abs=3e-3
        )


def test_adapter_saved_once_close_to_one_process_and_loads(runs):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from dpo_hub import embedded

    zero2_dir, single_dir = runs["zero2"][0], runs["single"][0]
    assert [p.name for p in zero2_dir.glob("*.safetensors")] == ["adapter_model.safetensors"]
    assert runs["zero2"][1].stdout.count("[dpo_hub] saved") == 1
    got, want = (load_file(d / "adapter_model.safetensors") for d in (zero2_dir, single_dir))
    assert sorted(got) == sorted(want)
    for key in (k for k in got if "lora_A" in k):
        b_key = key.replace("lora_A", "lora_B")
        update, expected = got[b_key] @ got[key], want[b_key] @ want[key]
        assert (update - expected).norm() / expected.norm() < 1e-3, key
    model = PeftModel.from_pretrained(embedded.build_model(), str(zero2_dir))  # plain peft, fp32 base
    ids = torch.tensor([[464, 3290, 318, 257]])
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, embedded.build_model()(ids).logits, atol=1e-6)


def test_accelerate_kept_as_cpu_ddp_stops(tmp_path):
    """ACCELERATE_USE_CPU makes accelerate drop its DeepSpeed plugin: the run stops instead of training as
    DDP under a DeepSpeed config."""
    out = tmp_path / "out"
    env = offline_env(tmp_path, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    cmd = [*accelerate_cmd("deepspeed_zero2_cpu.yaml"), "-m", RECIPE_MODULE, "--output_dir", str(out), *ARGS]
    proc = run(cmd, env, timeout=600)
    assert proc.returncode != 0
    assert "accelerate set up MULTI_CPU (ACCELERATE_USE_CPU=true is set)" in proc.stderr, proc.stderr[-3000:]
    assert not out.exists()
