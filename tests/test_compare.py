"""Base vs tuned comparison (``dpo_hub.compare.base_vs_tuned``): real tiny models and files, nothing
mocked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dpo_hub import CompareError, DataError, Generation, Recipe, UltraFeedback, embedded, prepare
from dpo_hub.cli.main import main as cli
from dpo_hub.compare.base_vs_tuned import compare_model, generate, load_pairs, side_by_side
from dpo_hub.compare.report import format_table, summarize_judge, wilson, write_outputs
from dpo_hub.compare.scoring import score_pairs

SHORT = Generation(max_new_tokens=4)  # sampling over GPT-2's vocabulary is the slow part on CPU
TWO_PROMPTS = ("Is eating animals cruel?", "How do I bake bread?")


def lora_model(seed: int) -> Any:
    """The embedded tiny GPT-2 with a random (non-zero) LoRA adapter; dropout on, to check eval mode is
    used."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(embedded.build_model(), config)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return embedded.load_tokenizer()


@pytest.fixture(scope="module")
def tuned() -> Any:
    return lora_model(0)


@pytest.fixture(scope="module")
def pairs(tokenizer) -> list[dict[str, str]]:
    adapter = UltraFeedback(dataset=embedded.EMBEDDED)
    return [adapter.to_pair(row, tokenizer) for row in embedded.sample_rows()[:5]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tuned, tokenizer) -> Path:
    """A finished-run folder as train writes it: adapter, tokenizer, recipe.yaml (40 rows -> 6 eval pairs)."""
    folder = tmp_path_factory.mktemp("run") / "run"
    tuned.save_pretrained(folder, save_embedding_layers=False)  # "auto" would look the base up online
    tokenizer.save_pretrained(folder)
    recipe = Recipe(
        model=embedded.EMBEDDED,
        data=UltraFeedback(dataset=embedded.EMBEDDED, limit=40),
        generation=SHORT,
        output_dir=str(folder),
    )
    (folder / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    return folder


def reference_logps(
    model: Any, tokenizer: Any, prompt: str, response: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax at each ``response + eos`` position after ``prompt`` and its target ids: one plain
    forward."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits, -1)[len(prompt_ids) - 1 :], torch.tensor(ids[len(prompt_ids) :])


def test_scores_match_a_one_sequence_reference(tuned, tokenizer, pairs):
    base = embedded.build_model().eval()  # the real base model, not the adapter switched off
    tuned.eval()
    scores = score_pairs(tuned, tokenizer, pairs, batch_size=2)  # several padded batches
    assert tuned.training is False and scores.skipped == 0
    for i, pair in enumerate(pairs):
        for side in ("rejected", "chosen"):
            lp_tuned, targets = reference_logps(tuned, tokenizer, pair["prompt"], pair[side])
            lp_base, _ = reference_logps(base, tokenizer, pair["prompt"], pair[side])
            pick = torch.arange(len(targets)), targets
            assert getattr(scores, f"tuned_{side}")[i] == pytest.approx(float(lp_tuned[pick].sum()), abs=1e-3)
            assert getattr(scores, f"base_{side}")[i] == pytest.approx(float(lp_base[pick].sum()), abs=1e-3)
            assert getattr(scores, f"{side}_tokens")[i] == len(targets)
        kl = (lp_tuned.exp() * (lp_tuned - lp_base)).sum()  # full-vocab KL(tuned || base), chosen side
        assert scores.chosen_kl[i] == pytest.approx(float(kl), abs=1e-4) and scores.chosen_kl[i] > 0
    tuned.train()


def test_other_adapter_other_scores_same_base(tuned, tokenizer, pairs):
    mine, other = score_pairs(tuned, tokenizer, pairs[:3]), score_pairs(lora_model(1), tokenizer, pairs[:3])
    assert mine.base_chosen == pytest.approx(other.base_chosen, abs=1e-5)
    assert all(abs(a - b) > 1e-3 for a, b in zip(mine.tuned_chosen, other.tuned_chosen, strict=True))


def test_same_seed_same_generations(tuned, tokenizer):
    first = compare_model(tuned, tokenizer, generation=SHORT).generations
    again = compare_model(tuned, tokenizer, generation=SHORT).generations
    assert first == again and len(first) == 1


def test_a_changed_adapter_changes_the_answers_and_a_zero_one_does_not(tokenizer):
    from peft import LoraConfig, get_peft_model

    settings = Generation(max_new_tokens=8)
    base_answer = generate(embedded.build_model(), tokenizer, settings.prompts[0], settings)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, task_type="CAUSAL_LM"
    )
    model = get_peft_model(embedded.build_model(), config)  # lora_B starts at 0: tuned == base
    zero = side_by_side(model, tokenizer, settings)[0]
    assert zero["base"] == zero["tuned"] == base_answer and zero["differ"] is False
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1.0)  # the weights changed on purpose
    changed = side_by_side(model, tokenizer, settings)[0]
    assert changed["base"] == base_answer, "adapter off must be the plain base model"
    assert changed["tuned"] != base_answer and changed["differ"] is True


def test_judge_summary_counts_wins_ties_and_losses():
    scores = [
        {"prompt": "a", "base": 1.0, "tuned": 2.0},
        {"prompt": "b", "base": 3.0, "tuned": 3.0},
        {"prompt": "c", "base": 5.0, "tuned": 4.0},
        {"prompt": "d", "base": 0.0, "tuned": 1.0},
    ]
    summary = summarize_judge({"judge": "rm", "scores": scores})
    assert (summary["wins"], summary["ties"], summary["losses"]) == (2, 1, 1)
    assert summary["win_rate"]["value"] == 0.625  # (2 wins + half of 1 tie) / 4, worked out by hand
    assert summary["mean_reward"] == {"base": 2.25, "tuned": 2.5}
    flipped = summarize_judge(
        {"judge": "rm", "scores": [{**r, "base": r["tuned"], "tuned": r["base"]} for r in scores]}
    )
    assert (flipped["wins"], flipped["losses"], flipped["win_rate"]["value"]) == (1, 2, 0.375)


@pytest.mark.parametrize("hits,n", [(0, 10), (5, 10), (10, 10), (1, 3), (37, 60)])
def test_wilson_interval(hits, n):
    lo, hi = wilson(hits, n)
    assert 0.0 <= lo <= hits / n <= hi <= 1.0
    if (hits, n) == (5, 10):
        assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_judge_win_rate(tmp_path, tuned, tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    judge = GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, num_labels=1, pad_token_id=50256)
    )
    judge.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    comparison = compare_model(
        tuned, tokenizer, prompts=TWO_PROMPTS, judge=str(tmp_path / "rm"), generation=SHORT
    )
    result = comparison.judge
    text = comparison.generations[1]["prompt"] + comparison.generations[1]["tuned"]
    with torch.no_grad():
        direct = judge.eval()(**tokenizer(text, return_tensors="pt")).logits[0, 0]
    assert result["scores"][1]["tuned"] == pytest.approx(float(direct), abs=1e-5)
    assert "judge win rate" in format_table(comparison)


def test_run_folder_default_pairs_and_outputs(run_dir, tuned, tokenizer, capsys):
    (run_dir / "comparison.json").write_text('{"the run": "its own"}', encoding="utf-8")
    assert cli(["compare", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "preference accuracy (summed log-prob)" in table and "implicit reward margin" in table
    assert (run_dir / "comparison.json").read_text() == '{"the run": "its own"}', (
        "the run's own files are kept"
    )
    [folder] = (run_dir / "comparisons").iterdir()
    assert f"wrote {folder / 'comparison.json'}" in table
    result = json.loads((folder / "comparison.json").read_text())
    assert result["preference"]["n_pairs"] == 6 and result["settings"]["beta"] == 0.1
    assert "preference accuracy" in (folder / "comparison.md").read_text()
    assert (folder / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert cli(["compare", str(run_dir), "--output", str(run_dir), "--prompt", "Hi"]) == 1
    assert "already holds a comparison" in capsys.readouterr().err, (
        "an explicit --output is not overwritten either"
    )
    assert (run_dir / "comparison.json").read_text() == '{"the run": "its own"}'
    # the saved adapter scores exactly like the in-memory one on the run's own eval split
    eval_pairs = prepare(Recipe.from_yaml(run_dir / "recipe.yaml").data, tokenizer).eval
    direct = score_pairs(tuned, tokenizer, load_pairs(eval_pairs))
    assert [r["tuned_chosen"] for r in result["per_pair"]] == pytest.approx(direct.tuned_chosen, abs=1e-4)


def test_comparison_writes_files(tmp_path, tuned, tokenizer, pairs):
    comparison = compare_model(tuned, tokenizer, pairs, generation=SHORT)
    write_outputs(comparison, tmp_path)
    result = comparison.to_dict()
    assert json.loads(json.dumps(result)) == result
    assert {p.name for p in tmp_path.iterdir()} >= {"comparison.json", "comparison.md", "comparison.png"}
    acc = result["preference"]["accuracy"]["per_token"]["tuned"]
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]
    print(format_table(compare_model(tuned, tokenizer, pairs, prompts=[])))


def test_bad_inputs_fail_clearly(tmp_path, tuned, tokenizer, pairs):
    with pytest.raises(CompareError, match="nothing to compare"):
        compare_model(tuned, tokenizer, pairs=None, prompts=[])
    with pytest.raises(CompareError, match="not a PEFT model"):
        compare_model(embedded.build_model(), tokenizer, pairs)
    bad = tmp_path / "prefs.jsonl"
    bad.write_text(
        "".join(
            json.dumps({"prompt": p["prompt"], "chosen": p["chosen"], "worse": p["rejected"]}) + "\n"
            for p in pairs
        ),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"prefs\.jsonl: missing column\(s\) \['rejected'\]; found"):
        compare_model(tuned, tokenizer, pairs=str(bad), prompts=[])
    with pytest.raises(DataError, match=r"\['rejected'\]"):
        compare_model(tuned, tokenizer, pairs=[{"prompt": "a", "chosen": "b"}], prompts=[])
    good = tmp_path / "prefs.csv"
    good.write_text("prompt,chosen,rejected\nHi,Hello there.,Go away.\nWhy?,Because.,No.\n", encoding="utf-8")
    assert len(load_pairs(str(good), tokenizer)) == 2


def test_hub_repo_id_via_cli(tmp_path, run_dir):
    """A pushed run compared by repo id: adapter and recipe come from the (local, offline) Hub."""
    import subprocess
    import sys

    from dpo_hub.testing.hub import LocalHub, Store, seed

    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.startswith("comparison")}
    seed(Store(tmp_path / "hub"), [("model", "tester/tiny-dpo", files)])
    with LocalHub(tmp_path / "hub") as hub:
        proc = subprocess.run(
            [sys.executable, "-m", "dpo_hub", "compare", "tester/tiny-dpo"],
            cwd=tmp_path,
            env=hub.client_env(hf_home=tmp_path / "hf"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Base vs tuned: tester/tiny-dpo; 6 pairs (the run's eval split of embedded)" in proc.stdout
    assert (
        json.loads((tmp_path / "comparison-tiny-dpo" / "comparison.json").read_text())["preference"][
            "n_pairs"
        ]
        == 6
    )


def test_truncated_pairs_are_counted_in_the_json_and_the_title(tuned, tokenizer, pairs):
    long = {**pairs[0], "chosen": pairs[0]["chosen"] + " and more" * 200}  # an answer longer than max_length
    cut = compare_model(tuned, tokenizer, [long, pairs[1]], prompts=[], max_length=256)
    assert cut.preference["truncated"] == 1 and cut.preference["skipped"] == 0
    assert "1 truncated to max_length 256" in format_table(cut)
    whole = compare_model(tuned, tokenizer, [long, pairs[1]], prompts=[])
    assert whole.preference["truncated"] == 0 and "truncated" not in format_table(whole)


def test_one_pair_and_skipped_pairs_keep_their_index(tuned, tokenizer, pairs):
    long = {**pairs[0], "prompt": "word " * 600}  # longer than max_length 512: nothing of the answer is left
    comparison = compare_model(tuned, tokenizer, [long, pairs[1]], prompts=[], max_length=512)
    assert comparison.preference["skipped"] == 1 and comparison.per_pair[0]["index"] == 1
    assert comparison.preference["reward_margin"]["ci95"] is None  # no spread from one pair; still valid JSON
    json.dumps(comparison.to_dict(), allow_nan=False)
    assert "implicit reward margin" in format_table(comparison)


# ---- the comparison scores pairs as trl trains on them ------------------------------------------------
EDGE_PAIRS = [  # where a re-implemented rule can drift from trl's
    {
        "prompt": "The answer is ",
        "chosen": "yes, clearly.",
        "rejected": "no.",
    },  # " yes" merges across the boundary
    {
        "prompt": "Say hi.\n",
        "chosen": "Hi!<|endoftext|>",
        "rejected": "Bye.",
    },  # an answer that already ends in eos
]


def trl_tokenizer(with_bos: bool) -> Any:
    """The embedded GPT-2 tokenizer; ``with_bos``: one that starts every text with a BOS token, as Llama's
    do."""
    from transformers import AutoTokenizer

    if not with_bos:
        return embedded.load_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(embedded.TOKENIZER_DIR, add_bos_token=True)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer("Hi")["input_ids"][0] == tokenizer.bos_token_id
    return tokenizer


@pytest.mark.parametrize("with_bos", [False, True], ids=["gpt2", "bos_tokenizer"])
def test_base_scores_equal_trls_reference_log_probs_on_its_own_batch(tmp_path, with_bos):
    """The comparison's base log-probs are trl's own: its tokenised dataset, collator and
    ``compute_ref_log_probs``.

    Ties ``encode_pair`` (a re-implementation of trl's tokenisation) to trl itself, not to a copy of the rule.
    """
    import datasets
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    tokenizer = trl_tokenizer(with_bos)
    data = prepare(UltraFeedback(dataset=embedded.EMBEDDED, limit=6, eval_fraction=0), tokenizer)
    pairs = [dict(p) for p in data.train] + EDGE_PAIRS
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(pairs),
        report_to=[],
        use_cpu=True,
        max_length=None,
        bf16=False,
        fp16=False,
    )  # fp32; nothing truncated on either side
    lora = LoraConfig(
        r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False, task_type="CAUSAL_LM"
    )  # a non-zero adapter: tuned != base, so "adapter off" is tested
    trainer = DPOTrainer(
        model=embedded.build_model(),
        ref_model=None,
        args=args,
        processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(pairs),
        peft_config=lora,
    )
    tokenised = trainer.train_dataset
    assert len(tokenised) == len(pairs) and tokenised["prompt"] == [p["prompt"] for p in pairs], (
        "same pairs, in order"
    )
    batch = trainer.data_collator([tokenised[i] for i in range(len(tokenised))])
    trainer.model.eval()
    trl_chosen, trl_rejected = trainer.compute_ref_log_probs(
        trainer.model, batch
    )  # the adapter off: the base

    scores = score_pairs(trainer.model, tokenizer, pairs, batch_size=3)
    assert scores.skipped == 0 and scores.index == list(range(len(pairs)))
    completion_tokens = batch["completion_mask"].sum(1).tolist()
    assert scores.chosen_tokens + scores.rejected_tokens == completion_tokens, "the tokens scored are trl's"
    for side, ours, theirs in (
        ("chosen", scores.base_chosen, trl_chosen),
        ("rejected", scores.base_rejected, trl_rejected),
    ):
        assert ours == pytest.approx(theirs.tolist(), rel=1e-4), (
            f"{side}: dpo_hub's base log-probs are not trl's"
        )
    assert all(abs(t - b) > 1e-3 for t, b in zip(scores.tuned_chosen, scores.base_chosen, strict=True))
