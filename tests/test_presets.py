"""LoRA and DPO presets turn into the right peft/trl objects."""

from __future__ import annotations

import warnings

import pytest
from peft import get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from dpo_hub import DPOPreset, LoraPreset


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=32))


def adapted(model, preset):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # peft warns when fan_in_fan_out is wrong
        peft_model = get_peft_model(model, preset.to_peft_config(model))
    names = {n.removesuffix(".lora_A.default") for n, _ in peft_model.named_modules() if n.endswith("lora_A.default")}
    return peft_model, {n.split("base_model.model.", 1)[1] for n in names}


@pytest.mark.parametrize(("preset", "expected_suffixes"), [
    (LoraPreset.gpt2_attention(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj"}),
    (LoraPreset.gpt2_all_linear(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"}),
    (LoraPreset.all_linear(), {"attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"}),
])
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
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=64))
    peft_model, names = adapted(llama, LoraPreset.all_linear())
    assert peft_model.peft_config["default"].fan_in_fan_out is False
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"}
    assert not any("lm_head" in n for n in names)


def test_tutorial_dpo_preset_is_explicit_about_trl_defaults(tmp_path):
    config = DPOPreset.tutorial().to_dpo_config(str(tmp_path), use_cpu=True)
    assert (config.beta, config.learning_rate, config.num_train_epochs) == (0.1, 1e-4, 1.0)
    assert (config.per_device_train_batch_size, config.warmup_steps, config.max_length) == (1, 2, 512)
    assert config.eval_strategy == "epoch" and config.loss_type == ["sigmoid"]
    assert config.bf16 is False and config.fp16 is False, "trl defaults bf16=True, which fails on CPU"
    assert config.disable_dropout is False, "trl's default would zero the tutorial's lora_dropout"
    assert config.gradient_checkpointing is False


def test_bad_preset_values_are_named():
    with pytest.raises(ValueError, match="dpo.loss_type='dpo' is not a loss the installed trl implements.*sigmoid"):
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


def test_auto_precision_on_cpu_is_fp32(tmp_path):
    config = DPOPreset(precision="auto").to_dpo_config(str(tmp_path), use_cpu=True)
    assert config.bf16 is False and config.fp16 is False
