"""``dpo.precision: auto`` on a CPU: bf16 only where a probe of this model's matmuls measured it faster.

The probe itself runs for real here (on the tiny model's widths); the CPU's bf16 flag is the only thing set
by the tests (``_cpuinfo_has_bf16``), so the suite checks the same decisions on CPUs with and without bf16.
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import TINY

from dpo_hub import embedded, runtime
from dpo_hub.hub.card import build_card
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.levers.precision import (
    PROBE_FILE,
    cached_probe,
    choose_precision,
    machine_key,
    model_shape,
)
from dpo_hub.training.run import RunState, build_trainer


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """As on a CPU with AVX-512 BF16 and nothing forced; a cache folder of this test."""
    monkeypatch.setattr(runtime, "_cpuinfo_has_bf16", lambda: True)
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / PROBE_FILE


def known_probe(path, model, fp32_s: float, bf16_s: float) -> None:
    """A probe result this machine measured before, as the cache file keeps it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = machine_key(model_shape(model))
    path.write_text(json.dumps({key: {"fp32_s": fp32_s, "bf16_s": bf16_s, "key": key}}))


def test_the_probe_measures_once_per_shape_and_keeps_its_answer(bf16_cpu, caplog):
    shape = model_shape(embedded.build_model())
    first = cached_probe(shape)
    assert first["cached"] is False and first["fp32_s"] > 0 and first["bf16_s"] > 0
    kept = json.loads(bf16_cpu.read_text())
    assert set(kept) == {machine_key(shape)}
    again = cached_probe(shape)
    assert again["cached"] is True and (again["fp32_s"], again["bf16_s"]) == (
        first["fp32_s"],
        first["bf16_s"],
    )
    other = cached_probe({**shape, "hidden": shape["hidden"] * 2})  # another model: measured, kept beside
    assert other["cached"] is False and len(json.loads(bf16_cpu.read_text())) == 2

    bf16_cpu.write_text("{half a file")  # unreadable: measured again, the file rewritten whole
    with caplog.at_level(logging.WARNING, logger="dpo_hub"):
        assert cached_probe(shape)["cached"] is False
    assert "probing the precision again" in caplog.text and PROBE_FILE in caplog.text
    assert set(json.loads(bf16_cpu.read_text())) == {machine_key(shape)}
    assert not list(bf16_cpu.parent.glob("*.partial"))


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "expected"),
    [(1.0, 0.5, "bf16"), (1.0, 0.95, "fp32"), (1.0, 1.5, "fp32")],
    ids=["bf16_2x_faster", "bf16_within_margin", "bf16_slower"],
)
def test_auto_follows_the_measured_probe(bf16_cpu, fp32_s, bf16_s, expected):
    model = embedded.build_model()
    known_probe(bf16_cpu, model, fp32_s, bf16_s)
    picked, why, probe = choose_precision("auto", model, use_cpu=True)
    assert picked == expected and probe["cached"] is True, why
    assert f"{fp32_s / bf16_s:.2f}x" in why
    assert choose_precision("fp32", model, use_cpu=True)[0] == "fp32", "a set precision is never probed"
    assert choose_precision("bf16", model, use_cpu=True)[:2] == ("bf16", "set by dpo.precision")


@pytest.mark.parametrize(("forced", "expected"), [("1", "bf16"), ("0", "fp32")])
def test_the_environment_override_wins_over_the_probe(bf16_cpu, monkeypatch, forced, expected):
    model = embedded.build_model()
    known_probe(bf16_cpu, model, fp32_s=1.0, bf16_s=0.5 if expected == "fp32" else 2.0)  # says the opposite
    monkeypatch.setenv(runtime.CPU_BF16_ENV, forced)
    picked, why, probe = choose_precision("auto", model, use_cpu=True)
    assert (picked, probe) == (expected, None) and f"{runtime.CPU_BF16_ENV}={forced}" in why


def test_a_cpu_without_bf16_is_never_probed(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "_cpuinfo_has_bf16", lambda: False)
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path))
    picked, _, probe = choose_precision("auto", embedded.build_model(), use_cpu=True)
    assert (picked, probe) == ("fp32", None) and not (tmp_path / PROBE_FILE).exists()


@pytest.mark.parametrize(("fp32_s", "bf16_s", "bf16"), [(1.0, 0.5, True), (1.0, 2.0, False)])
def test_the_trainer_runs_in_what_the_probe_chose(bf16_cpu, tmp_path, tokenizer, fp32_s, bf16_s, bf16):
    from dpo_hub import prepare

    known_probe(bf16_cpu, embedded.build_model(), fp32_s, bf16_s)
    recipe = RECIPE.override({**TINY, "dpo.precision": "auto"})
    run = RunState(recipe=recipe, accelerate=None, output_dir=tmp_path / "out")
    data = prepare(recipe.data, tokenizer, max_length=64)
    trainer = build_trainer(recipe, tokenizer, data, tmp_path / "ckpt", run=run)
    assert trainer.args.bf16 is bf16 and trainer.args.mixed_precision == ("bf16" if bf16 else "no")
    assert (trainer.accelerator.mixed_precision == "bf16") is bf16
    assert run.precision["setting"] == "auto" and run.precision["resolved"] == ("bf16" if bf16 else "fp32")
    assert run.precision["probe"]["fp32_s"] == fp32_s  # recorded in metrics.json with the choice


def test_the_card_states_what_auto_ran_in(tmp_path):
    recipe = RECIPE.override({"model": "embedded", "data.dataset": "embedded"})
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    metrics = {
        "data": {"train_pairs": 8, "eval_pairs": 0},
        "precision": {"setting": "auto", "resolved": "bf16"},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert "| dpo.precision | auto (ran in bf16) |" in str(build_card(tmp_path, "tester/precision"))
    metrics["precision"]["resolved"] = "auto"  # not resolved (an older folder): the setting alone
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert "| dpo.precision | auto |" in str(build_card(tmp_path, "tester/precision"))
