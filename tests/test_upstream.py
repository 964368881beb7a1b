"""The one boundary with trl: private names probed in one module, levers that say whether they apply (and are
seen to apply), and nothing left changed in trl once a run's ``train()`` returns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import trl.trainer.utils as trl_utils
from conftest import TINY, first_batch, read_metrics, tiny_trainer
from trl import DPOTrainer

from dpo_hub import embedded, upstream
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training.levers import cpu_head

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_hub"
UPSTREAM_LIBRARIES = ("trl", "transformers", "accelerate", "peft", "huggingface_hub", "datasets", "torch")
SMALL = {**TINY, "dpo.precision": "fp32"}
CPU_LEVERS = (
    "score_completions_only",
    "smaller_logit_tiles",
    "lean_tile_folds",
    "trim_padding",
    "reference_cache",
)


def trainer_for(tmp_path, tokenizer, **changes):
    return tiny_trainer(tmp_path, tokenizer, **{"dpo.precision": "fp32", **changes})


@pytest.mark.parametrize("private", [p for p in upstream.ALL if "." not in p.name], ids=lambda p: p.name)
def test_every_private_module_name_exists_in_the_installed_versions(private):
    """A renamed private name fails here (it never skips): its lever would otherwise go quietly off."""
    assert upstream.missing(private) is None, upstream.missing(private)
    upstream.get(private)


def test_trainer_private_attributes_exist(tmp_path, tokenizer):
    trainer = trainer_for(tmp_path, tokenizer)
    on_trainer = [p for p in upstream.ALL if "." in p.name and p.library != "accelerate"]
    assert on_trainer and upstream.missing(*on_trainer, instance=trainer) is None
    on_accelerator = [p for p in upstream.ALL if "." in p.name and p.library == "accelerate"]
    assert on_accelerator and upstream.missing(*on_accelerator, instance=trainer.accelerator) is None


def test_a_moved_name_turns_its_lever_off_with_the_reason(monkeypatch):
    moved = upstream.Private("trl.trainer.utils", "_moved_away", "score_completions_only: test")
    monkeypatch.setattr(upstream, "TRL_USE_TRITON", moved)
    levers, patches = cpu_head.head_levers(use_cpu=True)
    off = levers["score_completions_only"]
    assert not off.active and "trl.trainer.utils._moved_away not found" in off.why and "trl " in off.why
    assert all(private.name != "_moved_away" for private, _ in patches), "nothing is patched blindly"
    assert levers["smaller_logit_tiles"].active and levers["lean_tile_folds"].active


def private_names_outside_upstream() -> list[str]:
    """``from LIB import _name``, ``x._name`` for a name upstream lists, or ``module.attr = ...`` on an
    upstream module object, anywhere in dpo_hub but ``upstream.py`` (and the local Hub server, which uses
    none)."""
    listed = {p.name.rsplit(".", 1)[-1] for p in upstream.ALL}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "upstream.py" and path.parent == PACKAGE or "testing" in path.parts:
            continue
        modules = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UPSTREAM_LIBRARIES:
                found += [f"{where} imports {a.name}" for a in node.names if a.name.startswith("_")]
                modules |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {
                    a.asname or a.name.split(".")[0]
                    for a in node.names
                    if a.name.split(".")[0] in UPSTREAM_LIBRARIES
                }
            if isinstance(node, ast.Attribute) and node.attr in listed:
                found.append(f"{where} uses .{node.attr}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id in modules
                    ):
                        found.append(
                            f"{path.relative_to(PACKAGE)}:{node.lineno} assigns "
                            f"{target.value.id}.{target.attr}"
                        )
    return found


def test_private_upstream_names_live_in_upstream_only():
    assert private_names_outside_upstream() == []


def test_the_private_name_check_sees_a_violation(tmp_path, monkeypatch):
    bad = PACKAGE / "training" / "_violation_probe.py"
    bad.write_text(
        "import trl.trainer.utils as trl_utils\nfrom trl.trainer.utils import _use_triton\n"
        "trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 1\n"
    )
    try:
        found = private_names_outside_upstream()
    finally:
        bad.unlink()
    assert any("imports _use_triton" in f for f in found)
    assert any("_CHUNKED_LOGPROB_CHUNK_SIZE" in f for f in found)


class HeadSpy:
    """Rows and tile width of each call to trl's chunked log-prob head."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[int, int]] = []
        original = trl_utils._ChunkedLogProbFunction.apply

        def apply(hidden, weight, bias, labels, temperature, chunk_size, *rest):
            self.calls.append((hidden.shape[0], chunk_size))
            return original(hidden, weight, bias, labels, temperature, chunk_size, *rest)

        monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", apply)


def policy_loss(trainer, batch):
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch)


def test_levers_apply_inside_the_trainer_and_trl_is_itself_afterwards(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    trl_globals = {name: getattr(trl_utils, name) for name in ("_use_triton", "_CHUNKED_LOGPROB_CHUNK_SIZE")}
    trainer = trainer_for(tmp_path / "a", tokenizer)
    assert all(trainer.levers[name].active for name in CPU_LEVERS), trainer.levers
    batch = first_batch(trainer)
    answer_positions = int((batch["completion_mask"][:, 1:] == 1).sum())
    trainer.reference_cache.fill(trainer.model, batch)  # the reference is known: one head call, the policy's
    spy = HeadSpy(monkeypatch)
    with trainer.levers_on():
        policy_loss(trainer, batch)
    assert spy.calls == [(answer_positions, cpu_head.CPU_VOCAB_TILE)], "answer tokens only, 2,048-wide tiles"

    trainer.train()  # the run's own scope: set while it trains, undone when it returns
    assert {name: getattr(trl_utils, name) for name in trl_globals} == trl_globals
    backbone = trainer.model.get_base_model().base_model
    assert "forward" not in backbone.__dict__, "the row-trimming wrapper is gone after train()"
    spy.calls.clear()
    policy_loss(trainer, batch)  # outside the scope: trl's own head, every position, trl's tile width
    every_position = batch["input_ids"][:, 1:].numel()
    assert spy.calls == [(every_position, trl_globals["_CHUNKED_LOGPROB_CHUNK_SIZE"])]

    plain = DPOTrainer(
        model=embedded.build_model(),
        ref_model=embedded.build_model(),
        args=trainer.args,
        train_dataset=trainer.train_dataset,
        eval_dataset=trainer.eval_dataset,
        processing_class=tokenizer,
    )  # trl used directly in the same process
    spy.calls.clear()
    plain.model.eval()
    with torch.no_grad():
        plain.compute_loss(plain.model, {k: v for k, v in batch.items() if not k.startswith("ref_")})
    assert all(rows == every_position for rows, _ in spy.calls) and len(spy.calls) == 2  # policy + reference


def test_the_reference_cache_checks_that_trl_reads_it(tmp_path, tokenizer, monkeypatch):
    """One model forward per loss with the cache; if trl stops reading the batch's reference (simulated by
    switching trl's flag back off), the cache says so and steps aside instead of doubling the work."""
    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    trainer = trainer_for(tmp_path / "a", tokenizer, **{"dpo.eval_strategy": "no"})  # training forwards only
    trainer.reference_cache.prefill(
        trainer.train_dataset
    )  # every pair known: a loss needs the policy forward only
    forwards = []
    hook = trainer.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    trainer.train()
    hook.remove()
    assert trainer.levers["reference_cache"].active and trainer.reference_cache is not None
    micro_batches = trainer.state.global_step * trainer.args.gradient_accumulation_steps
    assert len(forwards) == micro_batches, "one forward per loss: trl read the cached reference"

    ignored = trainer_for(tmp_path / "b", tokenizer)
    ignored.precompute_ref_logps = False  # as if trl no longer read it
    ignored.train()
    lever = ignored.levers["reference_cache"]
    assert not lever.active and "precompute_ref_logps" in lever.why and ignored.reference_cache is None


def test_a_run_reports_each_lever(trained_run):
    run_dir, _ = trained_run
    metrics = read_metrics(run_dir)
    levers = metrics["levers"]
    expected = {
        *CPU_LEVERS,
        "bf16_saved_activations",
        "bf16_base_weights",
        "gradient_checkpointing",
        "base_dropout_off",
        "fused_gelu",
    }
    assert set(levers) == expected
    assert all(isinstance(v["active"], bool) and v["why"] for v in levers.values())
    assert all(levers[name]["active"] for name in CPU_LEVERS), levers
    assert metrics["precision"]["resolved"] in ("fp32", "bf16") and metrics["precision"]["why"]


def test_train_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    """After ``dpo_hub.train`` returns, trl's globals, torch's threads and warning filters are what they
    were."""
    import warnings

    from dpo_hub import train

    monkeypatch.setenv("DPO_HUB_CACHE", str(tmp_path / "cache"))
    trl_globals = {name: getattr(trl_utils, name) for name in ("_use_triton", "_CHUNKED_LOGPROB_CHUNK_SIZE")}
    threads, filters = torch.get_num_threads(), list(warnings.filters)
    torch.set_num_threads(1)
    try:
        recipe = RECIPE.override({**SMALL, "data.limit": 12, "dpo.max_steps": 1, "dpo.eval_strategy": "no"})
        train(recipe, tmp_path / "run")
        assert torch.get_num_threads() == 1, "the run's threads are not left behind"
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert {name: getattr(trl_utils, name) for name in trl_globals} == trl_globals
    assert warnings.filters == filters
