"""Mixtures: the embedded sample mixed with a local JSONL file in a real tiny run; shares in metrics and
card."""

from __future__ import annotations

import json
import stat
import sys

import pytest
from conftest import offline_env, read_metrics, run

from dpo_hub import DataError, Recipe, RecipeError, build_card, embedded
from dpo_hub.data.mixing import prepare_mixture
from dpo_hub.data.mixture import Mixture


def write_prefs(path, n=30):
    rows = [
        {
            "prompt": f"How should I look after houseplant number {i}?",
            "chosen": f"Water houseplant {i} once a week and keep it in bright light.",
            "rejected": f"Houseplant {i} is not worth your time.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def mix_yaml(prefs, rows=24, weight=0.25) -> str:
    return f"""model: auto
data:
  mix:
    - {{kind: ultrafeedback, dataset: auto, limit: 60, eval_fraction: 0.25, rows: {rows}}}
    - {{kind: preferences, dataset: {prefs}, eval_fraction: 0.2, weight: {weight}}}
  seed: 3
dpo: {{max_steps: 2, max_length: 128}}
"""


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """``dpo-hub train --config mix.yaml`` with a command-line override of one source's rows."""
    tmp = tmp_path_factory.mktemp("mix")
    config = tmp / "mix.yaml"
    config.write_text(mix_yaml(write_prefs(tmp / "prefs.jsonl"), rows=30), encoding="utf-8")
    out = tmp / "run"
    proc = run(
        [
            sys.executable,
            "-m",
            "dpo_hub",
            "train",
            "--config",
            str(config),
            "--data.mix.0.rows",
            "24",
            "--output_dir",
            str(out),
        ],
        offline_env(tmp),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc, tmp


def test_mixture_shares_are_recorded_in_metrics_and_card(mixed_run):
    out, _, tmp = mixed_run
    sources = read_metrics(out)["data"]["sources"]
    assert [(s["kind"], s["train_pairs"], s["share"]) for s in sources] == [
        ("ultrafeedback", 24, 0.75),
        ("preferences", 8, 0.25),
    ], "rows 24 + weight 0.25 of the whole = 24 + 8"
    assert sources[0]["rows"] == 24 and sources[1]["weight"] == 0.25
    assert read_metrics(out)["data"]["train_pairs"] == 32
    assert read_metrics(out)["data"]["eval_pairs"] == sum(s["eval_pairs"] for s in sources) > 0
    recipe = Recipe.from_yaml(out / "recipe.yaml")
    assert isinstance(recipe.data, Mixture) and recipe.data.mix[0].rows == 24 and recipe.data.seed == 3
    assert recipe.fingerprint() == read_metrics(out)["fingerprint"]
    assert recipe.override({"data.mix.1.weight": 0.5}).fingerprint() != recipe.fingerprint()
    text = build_card(out, "tester/mixed").text
    assert "| ultrafeedback: `dpo-hub/ultrafeedback-sample` | 24 | 75.0% |" in text
    assert "| preferences: `prefs.jsonl` | 8 | 25.0% |" in text
    assert build_card(out, "tester/mixed").data.datasets == ["dpo-hub/ultrafeedback-sample", "prefs.jsonl"]


def test_run_shows_only_warnings_that_concern_users(mixed_run):
    _, proc, _ = mixed_run
    for noise in (
        "is deprecated and will be removed in v6",
        "Could not find a config file in",
        "Unable to fetch remote file",
        "Saving the dataset",
        "Generating train split",
    ):
        assert noise not in proc.stderr + proc.stdout, noise
    assert "EMBEDDED DEFAULT" in proc.stdout and "gpt2 unavailable" in proc.stdout, (
        "dpo_hub's own warnings still show"
    )


def test_card_reads_as_one_document(mixed_run):
    out, _, tmp = mixed_run
    text = build_card(out, "tester/mixed").text
    outside_code = text.split("```yaml")[0]
    assert [line for line in outside_code.splitlines() if line.startswith("# ")] == ["# mixed"], "one title"
    headings = [line for line in outside_code.splitlines() if line.startswith("## ")]
    assert "## Base vs tuned on held-out pairs" in headings and len(headings) == len(set(headings))
    comparison = outside_code.split("## Base vs tuned on held-out pairs")[1].split("\n## ")[0]
    assert "preference accuracy" in comparison and str(tmp) not in comparison, (
        "no local path in the comparison"
    )
    assert text.count("**Prompt:** Is eating animals cruel?") == 1 and text.count("- tuned:") == 1, (
        "generations once"
    )
    assert "huggingface.co/" not in text and "github.com" not in text, "no links to placeholder pages"
    assert f"--config {out}" not in text, "the recipe is shown without its local header"


def test_run_files_are_world_readable(mixed_run):
    out, _, _ = mixed_run
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert modes["adapter_model.safetensors"] == modes["metrics.json"] == 0o644, (
        modes
    )  # the tests' umask is 022
    assert set(modes.values()) == {0o644}, modes


def test_bad_entries_are_named(tmp_path):
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    config = tmp_path / "bad.yaml"
    config.write_text(mix_yaml(prefs, weight=-1), encoding="utf-8")
    with pytest.raises(
        RecipeError, match=r"data.mix\[1\] \(preferences:.*prefs.jsonl\): weight=-1.0 must be"
    ):
        Recipe.from_yaml(config)
    with pytest.raises(
        RecipeError, match=r"data.mix\[0\] \(ultrafeedback:embedded\): rows=0 must be an integer >= 1"
    ):
        Recipe().override({"data.mix": [{"kind": "ultrafeedback", "dataset": "embedded", "rows": 0}]})
    too_many = Recipe().override(
        {
            "data.mix": [
                {
                    "kind": "ultrafeedback",
                    "dataset": "embedded",
                    "limit": 60,
                    "eval_fraction": 0.25,
                    "rows": 500,
                },
                {"kind": "preferences", "dataset": str(prefs), "weight": 0.5},
            ]
        }
    )
    with pytest.raises(
        DataError,
        match=r"data.mix\[0\] \(ultrafeedback:embedded\): rows=500 asks for 500 train pairs "
        r"but it has only \d+",
    ):
        prepare_mixture(too_many.data, embedded.load_tokenizer())


def test_held_out_stays_disjoint_in_content(tmp_path):
    """The same file twice: each source's held-out prompts are also dropped if the other source trains on
    them."""
    prefs = str(write_prefs(tmp_path / "prefs.jsonl"))
    recipe = Recipe().override(
        {
            "data.mix": [
                {"kind": "preferences", "dataset": prefs, "eval_fraction": 0.3},
                {"kind": "preferences", "dataset": prefs, "eval_fraction": 0.3, "seed": 5},
            ]
        },
        source="test",
    )
    data = prepare_mixture(recipe.data, embedded.load_tokenizer())
    assert not set(data.train["prompt"]) & set(data.eval["prompt"])
