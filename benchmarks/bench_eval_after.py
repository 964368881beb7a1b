"""The eval after training + the comparison of the default recipe on the embedded eval split, alternated:
before = what a run did until issue 22/23 (trl's eval at the epoch's last step, trl's evaluate after training,
the comparison's own pass from text in fp32) vs after = one scoring pass (``dpo_hub.training.evaluation``).

    python benchmarks/bench_eval_after.py [ROUNDS]
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from dpo_hub import embedded, prepare
from dpo_hub.compare.base_vs_tuned import compare_model
from dpo_hub.config.presets import Generation
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
from dpo_hub.training import evaluation
from dpo_hub.training.run import build_trainer

os.environ.setdefault("DPO_HUB_CACHE", tempfile.mkdtemp())
torch.set_num_threads(2)
tok = embedded.load_tokenizer()
recipe = RECIPE.override(
    {"model": "embedded", "data.dataset": "embedded", "dpo.max_steps": 3, "dpo.learning_rate": 1e-3}
)
data = prepare(recipe.data, tok, max_length=recipe.dpo.max_length)
trainer = build_trainer(recipe, tok, data, Path(tempfile.mkdtemp()) / "ckpt")
print("eval pairs", len(trainer.eval_dataset), "bf16", trainer.args.bf16, flush=True)
trainer.train()
trainer.reference_cache.prefill(trainer.eval_dataset)  # as the default (whole-epoch) run has them
model = trainer.accelerator.unwrap_model(trainer.model)
gen = Generation(prompts=())


def before():
    trainer.evaluate()
    trainer.evaluate()  # epoch-end eval at the last step, then _fit's
    compare_model(
        model, tok, data.eval, generation=gen, beta=recipe.dpo.beta, max_length=recipe.dpo.max_length
    )


def after():
    metrics, scores, source = evaluation.eval_after_training(trainer)
    assert source == evaluation.FROM_PASS
    compare_model(model, tok, generation=gen, beta=recipe.dpo.beta, scores=scores)


times = {"before": [], "after": []}
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for name, fn in (
        (("before", before), ("after", after)) if i % 2 == 0 else (("after", after), ("before", before))
    ):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times[name].append(dt)
        print(f"{name}: {dt:.1f} s (load {load:.1f})", flush=True)
ratios = [b / a for b, a in zip(times["before"], times["after"])]
print(
    json.dumps({k: [round(x, 1) for x in v] for k, v in times.items()}),
    "ratios",
    [round(r, 2) for r in ratios],
    "loadavg",
    os.getloadavg(),
)
