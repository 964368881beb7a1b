"""The shipped accelerate configs: each loads with accelerate's own loader, says how to run it, has the
fields its strategy needs; cpu_ddp.yaml really starts 2 gloo ranks (a real `accelerate launch`, no mocks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

CONFIG_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"
RECIPE = "-m dpo_hub.recipes.gpt2_ultrafeedback"

# name -> (distributed_type, num_processes, num_machines, use_cpu, mixed_precision)
EXPECTED = {
    "cpu.yaml": (DistributedType.NO, 1, 1, True, "no"),
    "cpu_ddp.yaml": (DistributedType.MULTI_GPU, 2, 1, True, "no"),
    "single_gpu.yaml": (DistributedType.NO, 1, 1, False, "bf16"),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 2, 1, False, "bf16"),
    "fsdp.yaml": (DistributedType.FSDP, 2, 1, False, "bf16"),
    "fsdp_cpu.yaml": (DistributedType.FSDP, 2, 1, True, "no"),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2, 1, False, "bf16"),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 2, 1, False, "bf16"),
    "deepspeed_zero2_cpu.yaml": (DistributedType.DEEPSPEED, 2, 1, True, "no"),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, 2, False, "bf16"),
    "multi_node_cpu.yaml": (DistributedType.MULTI_GPU, 2, 2, True, "no"),
}
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def test_every_config_is_listed():
    assert CONFIGS == sorted(EXPECTED), "a config was added or removed: update EXPECTED and the README"


@pytest.mark.parametrize("name", CONFIGS)
def test_loads_with_accelerates_loader(name):
    path = str(CONFIG_DIR / name)
    config = load_config_from_file(path)
    assert isinstance(config, ClusterConfig)
    loaded = config.to_dict()
    for key, value in yaml.safe_load(
        Path(path).read_text()
    ).items():  # nothing we wrote is dropped or changed
        assert loaded.get(key) == value, (
            f"{name}: accelerate reads {key}={loaded.get(key)!r}, the file says {value!r}"
        )
    distributed_type, processes, machines, use_cpu, precision = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert config.num_processes == processes
    assert config.num_machines == machines
    assert config.use_cpu is use_cpu
    assert config.mixed_precision == precision


@pytest.mark.parametrize("name", CONFIGS)
def test_header_says_when_and_how(name):
    text = (CONFIG_DIR / name).read_text(encoding="utf-8")
    header = text.split("\ncompute_environment:")[0]
    assert all(line.startswith("#") for line in header.splitlines()), "the header is one comment block"
    assert "Use when" in header
    assert f"accelerate launch --config_file accelerate_configs/{name}" in header
    assert RECIPE in header
    directives = [line for line in header.splitlines() if re.match(r"#\s*dpo_hub\s*:", line)]
    assert len(directives) == 1, "one '# dpo_hub: {...}' line with the recipe-side settings"
    settings = yaml.safe_load(directives[0].split(":", 1)[1])
    expected_precision = "fp32" if EXPECTED[name][4] == "no" else EXPECTED[name][4]
    assert settings["dpo.precision"] == expected_precision, "recipe precision matches mixed_precision"


@pytest.mark.parametrize("name", CONFIGS)
def test_readme_has_a_section(name):
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert f"## {name}" in readme


def test_fsdp_is_fsdp2_and_lora_aware():
    fsdp = load_config_from_file(str(CONFIG_DIR / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "GPT2Block"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # SHARDED: Trainer.save_model writes no adapter
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True
    assert fsdp["fsdp_reshard_after_forward"] is True  # FSDP2 wants a bool, not FULL_SHARD
    assert fsdp["fsdp_activation_checkpointing"] is False  # never together with dpo.gradient_checkpointing
    for obsolete in (
        "fsdp_use_orig_params",
        "fsdp_sync_module_states",
        "fsdp_sharding_strategy",
        "fsdp_backward_prefetch",
        "fsdp_forward_prefetch",
    ):
        assert obsolete not in fsdp, f"{obsolete} is FSDP1-only (accelerate warns or fails with FSDP2)"


def test_gpt2block_is_the_class_to_wrap():
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block, GPT2LMHeadModel

    assert GPT2Block.__name__ in GPT2LMHeadModel._no_split_modules


@pytest.mark.parametrize(
    "name, stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3), ("deepspeed_zero2_cpu.yaml", 2)]
)
def test_deepspeed_stages(name, stage):
    ds = load_config_from_file(str(CONFIG_DIR / name)).deepspeed_config
    assert ds["zero_stage"] == stage
    assert ds["offload_optimizer_device"] == ds["offload_param_device"] == "none"
    if stage == 3:  # LoRA + ZeRO-3: shard at load time, and gather the adapter to save it
        assert ds["zero3_init_flag"] is True
        assert ds["zero3_save_16bit_model"] is True
    else:
        assert ds["zero3_init_flag"] is False
    for left_to_recipe in ("gradient_accumulation_steps", "gradient_clipping"):
        assert left_to_recipe not in ds


def test_multi_node_fields_to_fill():
    config = load_config_from_file(str(CONFIG_DIR / "multi_node.yaml"))
    assert (config.num_machines, config.machine_rank) == (2, 0)
    assert config.main_process_ip == "FILL_IN_MAIN_MACHINE_IP"
    assert isinstance(config.main_process_port, int)
    assert config.num_processes % config.num_machines == 0


def test_accelerate_rejects_unknown_top_level_keys(tmp_path):
    """Why recipe-side settings ride in a '# dpo_hub:' comment and not in a key of their own."""
    bad = tmp_path / "with_key.yaml"
    bad.write_text((CONFIG_DIR / "cpu.yaml").read_text() + "dpo_hub: {dpo.precision: fp32}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config_from_file(str(bad))


@pytest.mark.parametrize(
    "name, launcher",
    [
        ("cpu.yaml", "simple"),
        ("cpu_ddp.yaml", "multi_gpu"),
        ("single_gpu.yaml", "simple"),
        ("multi_gpu.yaml", "multi_gpu"),
        ("fsdp.yaml", "fsdp"),
        ("fsdp_cpu.yaml", "fsdp"),
        ("deepspeed_zero2.yaml", "deepspeed"),
        ("deepspeed_zero3.yaml", "deepspeed"),
        ("deepspeed_zero2_cpu.yaml", "deepspeed"),
        ("multi_node.yaml", "multi_gpu"),
        ("multi_node_cpu.yaml", "multi_gpu"),
    ],
)
def test_launcher_that_accelerate_picks(name, launcher):
    """What `accelerate launch --config_file X` does with the file (its own argument validation, nothing run).

    cpu_ddp.yaml must reach the torchrun launcher: MULTI_CPU would start one process without mpirun.
    """
    import accelerate
    from accelerate.commands import launch

    validate = getattr(
        launch, "_validate_launch_command", None
    )  # private: the only way to ask without launching
    assert validate is not None, (
        f"accelerate {accelerate.__version__} has no accelerate.commands.launch._validate_launch_command: "
        "find what replaced it and call that here; skipping would leave the launcher each shipped config "
        "picks untested"
    )
    args = launch.launch_command_parser().parse_args(["--config_file", str(CONFIG_DIR / name), "train.py"])
    args, _, _ = validate(args)
    picked = (
        "deepspeed"
        if args.use_deepspeed
        else "fsdp"
        if args.use_fsdp
        else "multi_gpu"
        if args.multi_gpu and not args.cpu
        else "simple"
    )
    assert picked == launcher
    assert args.num_processes == EXPECTED[name][1]


PROBE = textwrap.dedent("""
    import os, torch
    from accelerate import PartialState
    state = PartialState(cpu=True)  # what the recipe asks for when no accelerator is present
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    total = torch.tensor([state.process_index + 1.0])
    if world > 1:
        torch.distributed.all_reduce(total)
    print(f"PROBE rank={state.process_index} num_processes={state.num_processes} world={world} "
          f"env_rank={os.environ.get('RANK')} env_world={os.environ.get('WORLD_SIZE')} \
backend={state.backend} "
          f"device={state.device.type} sum={total.item():g} omp={os.environ.get('OMP_NUM_THREADS')}", \
flush=True)
    if world > 1:
        torch.distributed.destroy_process_group()
""")


def _launch(config: str, tmp_path: Path) -> list[dict[str, str]]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU ranks even on a machine with GPUs
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(CONFIG_DIR / config),
            str(probe),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # ranks share one pipe and print writes the text and its newline separately: records can run together
    records = [chunk.split("\n", 1)[0] for chunk in result.stdout.split("PROBE ")[1:]]
    return [dict(item.split("=", 1) for item in record.split()) for record in records]


def test_cpu_ddp_starts_two_real_gloo_ranks(tmp_path):
    ranks = _launch("cpu_ddp.yaml", tmp_path)
    assert len(ranks) == 2, ranks
    assert sorted(r["rank"] for r in ranks) == ["0", "1"]
    assert sorted(r["env_rank"] for r in ranks) == ["0", "1"]
    for r in ranks:
        assert r["num_processes"] == r["world"] == r["env_world"] == "2"
        assert (r["backend"], r["device"]) == ("gloo", "cpu")
        assert r["sum"] == "3"  # a real all-reduce over both ranks: 1 + 2


def test_cpu_starts_one_process(tmp_path):
    (rank,) = _launch("cpu.yaml", tmp_path)
    assert (rank["rank"], rank["num_processes"], rank["world"], rank["device"]) == ("0", "1", "1", "cpu")
    import psutil

    # accelerate exports OMP_NUM_THREADS = physical cores / local processes (use_cpu: true), at least 1
    assert int(rank["omp"]) == max(1, psutil.cpu_count(logical=False) or 1)


@pytest.mark.parametrize(
    "flags, fits",
    [
        (["--config_file", str(CONFIG_DIR / "single_gpu.yaml")], "--config_file accelerate_configs/cpu.yaml"),
        (["--config_file", str(CONFIG_DIR / "fsdp.yaml")], "accelerate_configs/fsdp_cpu.yaml"),
        (["--cpu", "--num_processes", "4"], "accelerate_configs/cpu_ddp.yaml --num_processes 4"),
        (
            ["--config_file", str(CONFIG_DIR / "deepspeed_zero2.yaml")],
            "accelerate_configs/deepspeed_zero2_cpu.yaml",
        ),
        (["--config_file", "ZERO3_CPU"], "ZeRO-3 on the CPU, which stops in the first backward"),
    ],
    ids=["single_gpu", "fsdp", "cpu-num_processes-4", "deepspeed-gpu", "deepspeed-zero3-cpu"],
)
def test_no_silent_downgrade_on_a_cpu_machine(flags, fits, tmp_path):
    """A launch accelerate would quietly run as something else (GPU configs on the CPU, FSDP as DDP, 4
    processes as 1) or that cannot run here (ZeRO-3 on the CPU) stops before anything loads: one line (once,
    not per rank) naming the config that fits, exit 2, nothing written."""
    if "deepspeed" in fits.lower() or "ZeRO" in fits:  # without deepspeed, accelerate launch refuses itself
        pytest.importorskip("deepspeed", reason="accelerate launch stops on a DeepSpeed config without it")
    if "ZERO3_CPU" in flags:  # what a user would write: the ZeRO-2 CPU config at stage 3
        zero3 = tmp_path / "zero3_cpu.yaml"
        zero3.write_text(
            (CONFIG_DIR / "deepspeed_zero2_cpu.yaml").read_text().replace("zero_stage: 2", "zero_stage: 3")
        )
        flags = [str(zero3) if f == "ZERO3_CPU" else f for f in flags]
    _assert_refused(flags, fits, tmp_path)


def test_deepspeed_on_the_cpu_without_a_compiler_stops(tmp_path):
    """deepspeed's CPU accelerator builds its shared-memory op on the first run: without a C++ compiler the
    launch stops before anything loads, naming what is missing, instead of deep in deepspeed.initialize."""
    pytest.importorskip("deepspeed", reason="accelerate launch stops on a DeepSpeed config without it")
    flags = ["--config_file", str(CONFIG_DIR / "deepspeed_zero2_cpu.yaml")]
    error = _assert_refused(flags, "/nonexistent/c++ is not on PATH", tmp_path, CXX="/nonexistent/c++")
    assert "accelerate_configs/cpu_ddp.yaml" in error


def _assert_refused(flags: list[str], fits: str, tmp_path, **env: str) -> str:
    """Launch the recipe with ``flags``: it stops with one ``error:`` line containing ``fits``, before
    anything loads or is written; returns that line."""
    from conftest import RECIPE_MODULE, offline_env, run

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", RECIPE_MODULE]
    env = offline_env(tmp_path, CUDA_VISIBLE_DEVICES="", **env)  # no GPU, even on a machine that has one
    args = ["--output_dir", str(out), "--model", "embedded", "--data.limit", "12"]
    proc = run([*cmd, *args], env, timeout=180)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert fits in errors[0] and "accelerate launch " in errors[0]
    assert "[dpo_hub] data:" not in proc.stdout and "rank 0 of world size" not in proc.stdout
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    return errors[0]
