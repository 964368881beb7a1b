"""LoRA and DPO presets turn into the right peft/trl objects."""

from __future__ import annotations

import math
import warnings

import pytest
from peft import get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from dpo_hub import DPO_PRESETS, LORA_PRESETS, DPOPreset, LoraPreset
from dpo_hub.config.losses import describe_losses, untrained_loss
from dpo_hub.runtime import cpu_has_bf16


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=32))


def adapted(model, preset):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # peft warns when fan_in_fan_out is wrong
        peft_model = get_peft_model(model, preset.to_peft_config(model))
    names = {
        n.removesuffix(".lora_A.default")
        for n, _ in peft_model.named_modules()
        if n.endswith("lora_A.default")
    }
    return peft_model, {n.split("base_model.model.", 1)[1] for n in names}


@pytest.mark.parametrize(
    ("preset", "expected_suffixes"),
    [
        (LoraPreset.gpt2_attention(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj"}),
        (LoraPreset.gpt2_all_linear(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"}),
        (LoraPreset.all_linear(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"}),
    ],
)
def test_gpt2_presets_attach_to_the_right_modules(preset, expected_suffixes):
    peft_model, names = adapted(tiny_gpt2(), preset)
    assert {n.split(".", 3)[-1] for n in names} == expected_suffixes
    assert len(names) == 2 * len(expected_suffixes)  # two blocks
    assert peft_model.peft_config["default"].fan_in_fan_out is True
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_tutorial_lora_values():
    config = LoraPreset.gpt2_attention().to_peft_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"c_attn", "c_proj"} and config.fan_in_fan_out is True


def test_generic_all_linear_on_a_linear_architecture():
    llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
        )
    )
    peft_model, names = adapted(llama, LoraPreset.all_linear())
    assert peft_model.peft_config["default"].fan_in_fan_out is False
    assert {n.rsplit(".", 1)[-1] for n in names} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert not any("lm_head" in n for n in names)


def test_tutorial_dpo_preset_is_explicit_about_trl_defaults(tmp_path):
    config = DPOPreset.tutorial().to_dpo_config(str(tmp_path), use_cpu=True)
    assert (config.beta, config.learning_rate, config.num_train_epochs) == (0.1, 1e-4, 1.0)
    assert (config.per_device_train_batch_size, config.warmup_steps, config.max_length) == (1, 2, 512)
    assert config.eval_strategy == "epoch" and config.loss_type == ["sigmoid"]
    on_cpu_with_bf16 = cpu_has_bf16()  # precision auto: bf16 autocast only where the CPU computes it
    assert config.bf16 is on_cpu_with_bf16 and config.fp16 is False, (
        "trl defaults bf16=True, emulated on most CPUs"
    )
    assert config.disable_dropout is True, "trl's default: no dropout anywhere, as the tutorial runs"
    assert config.gradient_checkpointing is False


def test_bad_preset_values_are_named():
    with pytest.raises(
        ValueError, match="dpo.loss_type='dpo' is not a loss the installed trl implements.*sigmoid"
    ):
        DPOPreset(loss_type="dpo")
    with pytest.raises(ValueError, match="no_such_loss"):
        DPOPreset(loss_type="no_such_loss")  # trl's DPOConfig itself accepts any string
    with pytest.raises(ValueError, match="dpo.precision"):
        DPOPreset(precision="int4")


@pytest.mark.parametrize(("processes", "accumulation"), [(1, 8), (2, 4), (4, 2)])
def test_effective_batch_sets_accumulation(processes, accumulation):
    preset = DPOPreset(effective_batch_size=8)
    assert preset.accumulation_for(processes) == accumulation
    with pytest.raises(ValueError, match="effective_batch_size=8"):
        preset.accumulation_for(3)


@pytest.mark.parametrize(
    ("cpu_bf16", "bf16"), [("0", False), ("1", True)], ids=["cpu_without_bf16", "cpu_with_bf16"]
)
def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch, cpu_bf16, bf16):
    monkeypatch.setenv("DPO_HUB_CPU_BF16", cpu_bf16)  # as on a CPU without / with AVX-512 BF16 or AMX
    config = DPOPreset(precision="auto").to_dpo_config(str(tmp_path), use_cpu=True)
    assert config.bf16 is bf16 and config.fp16 is False
    config = DPOPreset(precision="fp32").to_dpo_config(str(tmp_path), use_cpu=True)
    assert config.bf16 is False and config.fp16 is False


def test_pass_through_lora_fields_change_what_peft_builds():
    preset = LoraPreset(extra={"layers_to_transform": "0", "use_rslora": "true"})
    peft_model, names = adapted(tiny_gpt2(), preset)
    assert names and all(n.startswith("transformer.h.0.") for n in names), "only layer 0 of the two"
    lora_layer = peft_model.get_submodule(f"base_model.model.{sorted(names)[0]}")
    assert lora_layer.scaling["default"] == pytest.approx(8 / 4**0.5), "rsLoRA: alpha / sqrt(r)"


def test_presets_by_name_are_the_classmethods():
    assert set(LORA_PRESETS) >= {"gpt2_attention", "gpt2_all_linear", "all_linear"} and set(DPO_PRESETS) >= {
        "tutorial"
    }
    for name, make in LORA_PRESETS.items():
        assert make().preset == name
    assert LORA_PRESETS["all_linear"]().fan_in_fan_out is None
    with pytest.raises(ValueError, match="lora.preset='mine'.*all_linear"):
        LoraPreset(preset="mine")


def test_multi_loss_reaches_trl_with_its_weights(tmp_path):
    preset = DPOPreset(
        loss_type="sigmoid,ipo", extra={"loss_weights": [1.0, 0.5], "report_to": "tensorboard"}
    )
    assert preset.loss_type == ("sigmoid", "ipo") and preset.loss_types == ("sigmoid", "ipo")
    config = preset.to_dpo_config(str(tmp_path), use_cpu=True)
    assert config.loss_type == ["sigmoid", "ipo"] and config.loss_weights == [1.0, 0.5]
    assert config.report_to == ["tensorboard"]
    assert DPOPreset(loss_type=["sigmoid"]).loss_type == "sigmoid", (
        "one loss stays a text (and its fingerprint)"
    )
    assert untrained_loss(preset.loss_type, 0.1, weights=[1.0, 0.5]) == pytest.approx(
        math.log(2) + 0.5 * 25.0
    )
    assert untrained_loss(("sigmoid", "hinge"), 0.1) == pytest.approx(math.log(2) + 1.0), (
        "weights default to 1.0"
    )
    assert untrained_loss("sigmoid", 0.1, weights=[2.0]) == pytest.approx(2 * math.log(2)), (
        "one loss, weighted"
    )
    assert untrained_loss(("sigmoid", "sft"), 0.1, weights=[1.0, 0.5]) is None, "sft depends on the model"
    assert describe_losses(("sigmoid", "sft"), [1.0, 0.5]) == "sigmoid x 1.0 + sft x 0.5"
    assert describe_losses("sigmoid") == "sigmoid"
