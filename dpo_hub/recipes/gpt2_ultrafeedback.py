"""GPT-2 x UltraFeedback: the DPO + LoRA tutorial as a recipe.

Run:      accelerate launch -m dpo_hub.recipes.gpt2_ultrafeedback [--dpo.beta 0.2 --data.limit 500 ...]
Supports: one CPU, one GPU, many GPUs/machines (see accelerate_configs/); any field overridden from the
          command line or a YAML file (--config); LoRA and DPO presets; trl's loss types.
Assumes:  a causal LM whose LoRA targets exist (GPT-2 names by default: c_attn, c_proj, Conv1D).
          With the Hub: gpt2 + argilla/ultrafeedback-binarized-preferences-cleaned (first 2,000 rows,
          15% held out). Without it: the embedded tiny GPT-2 and the bundled 400-pair sample (a banner
          says so); the tutorial's exact selection is --data.limit 50 --data.eval_fraction 0.1.
Writes:   adapter, tokenizer, recipe.yaml, metrics.json, loss.png, generations.md in --output_dir.
"""

from __future__ import annotations

import sys

from dpo_hub.cli.launch import run_recipe
from dpo_hub.config.presets import DPOPreset, LoraPreset
from dpo_hub.data.adapters import UltraFeedback
from dpo_hub.recipe import Recipe
from dpo_hub.recipes import smollm2_truthfulqa

RECIPE = Recipe(
    name="gpt2_ultrafeedback",
    model="auto",
    data=UltraFeedback(dataset="auto", format="text", limit=2000, eval_fraction=0.15),
    lora=LoraPreset.gpt2_attention(),
    dpo=DPOPreset.tutorial(),
    output_dir="outputs/gpt2-dpo",
)
YAML_HEADER = """GPT-2 x UltraFeedback DPO with LoRA (the tutorial's settings on today's trl).
Run: accelerate launch -m dpo_hub train --config recipes/gpt2_ultrafeedback.yaml
 (the same as: accelerate launch -m dpo_hub.recipes.gpt2_ultrafeedback)
Offline, model/dataset 'auto' fall back to the embedded tiny GPT-2 and bundled sample.
Costs: lora.r higher -> more memory; dpo.max_length and batch sizes higher -> more memory;
dpo.gradient_checkpointing true -> less memory, ~30% slower."""


TUTORIAL = RECIPE.replace(
    name="gpt2_ultrafeedback_tutorial", data=UltraFeedback.tutorial(), output_dir="outputs/gpt2-dpo-tutorial"
)
TUTORIAL_HEADER = """The tutorial exactly: GPT-2, the first 50 UltraFeedback rows, 90/10 split, \
DPOPreset.tutorial().
Run: accelerate launch -m dpo_hub train --config recipes/gpt2_ultrafeedback_tutorial.yaml
Its 5-pair eval split measures little; the default recipe (gpt2_ultrafeedback.yaml) holds out more."""
SHIPPED = {
    "gpt2_ultrafeedback": (RECIPE, YAML_HEADER),
    "gpt2_ultrafeedback_tutorial": (TUTORIAL, TUTORIAL_HEADER),
    "smollm2_truthfulqa": (smollm2_truthfulqa.RECIPE, smollm2_truthfulqa.YAML_HEADER),
}


def write_yaml_files(folder: str = "recipes") -> None:
    """Regenerate the shipped ``recipes/*.yaml`` from the Python definitions above."""
    for name, (recipe, header) in SHIPPED.items():
        with open(f"{folder}/{name}.yaml", "w", encoding="utf-8") as file:
            file.write(recipe.to_yaml(header))


def main(argv: list[str] | None = None) -> int:
    return run_recipe(RECIPE, argv)


if __name__ == "__main__":
    sys.exit(main())
