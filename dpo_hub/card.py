"""The model card of a run, built with ``huggingface_hub.ModelCard``: metadata, metrics, recipe, curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from dpo_hub import embedded, standins

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A LoRA adapter for [`{{ base_model }}`]({{ base_link }}) trained with Direct Preference Optimization
(trl's `DPOTrainer`, loss `{{ loss_type }}`, beta {{ beta }}) on `{{ dataset }}` by the
[dpo_hub](https://github.com/dpo-hub/dpo_hub) recipe `{{ recipe_name }}` (fingerprint `{{ fingerprint }}`).
{% if embedded_note %}
> **Embedded default.** {{ embedded_note }}
{% endif %}{% if standin_note %}
> **Stand-in base model.** Trained on {{ standin_note }}.
{% endif %}
## Use it

With peft alone:

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
model, tokenizer = AutoPeftModelForCausalLM.from_pretrained("{{ repo_id }}"), AutoTokenizer.from_pretrained("{{ repo_id }}")
```

With dpo_hub: `model, tokenizer = dpo_hub.pull_adapter("{{ repo_id }}")`

## Results

| metric (held-out pairs) | before | after |
|---|---|---|
{% for name, before, after in results %}| {{ name }} | {{ before }} | {{ after }} |
{% endfor %}
{% if comparison %}
### Base vs tuned on the eval split

{{ comparison }}
{% endif %}
![training curve](loss.png)

## Base vs tuned generations

{% for row in generations %}**Prompt:** {{ row.prompt }}

- base: {{ row.base | trim | replace("\\n", " ") }}
- tuned: {{ row.tuned | trim | replace("\\n", " ") }}

{% endfor %}
## Hyperparameters

| | |
|---|---|
{% for key, value in hyperparameters %}| {{ key }} | {{ value }} |
{% endfor %}
## Recipe

Rerun with `dpo-hub train --config recipe.yaml` (the file is in this repo):

```yaml
{{ recipe_yaml }}
```

## Framework versions

{% for lib, version in versions %}- {{ lib }} {{ version }}
{% endfor %}"""

RESULT_KEYS = {"eval_loss": "loss", "eval_rewards/accuracies": "reward accuracy", "eval_rewards/margins": "reward margin"}
_MODEL_LICENSES = {"gpt2": "mit", "openai-community/gpt2": "mit", embedded.EMBEDDED_MODEL_ID: "mit"}


def base_model_id(recipe_model: str | dict) -> str:
    """The base model's id from a recipe's ``model`` (a name, or the model group as read from recipe.yaml)."""
    name = recipe_model.get("name", "") if isinstance(recipe_model, dict) else recipe_model
    if name == embedded.EMBEDDED:
        return embedded.EMBEDDED_MODEL_ID
    return (standins.stand_in_for(name) or {}).get("hub_id", name)  # a pip stand-in: the Hub model it stands for


def dataset_id(dataset: str) -> str:
    return embedded.EMBEDDED_DATASET_ID if dataset == embedded.EMBEDDED else dataset


def build_card(output_dir: str | Path, repo_id: str, license: str | None = None) -> ModelCard:
    """The card for the finished run in ``output_dir`` as it will live at ``repo_id``."""
    output_dir = Path(output_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    base, data = base_model_id(recipe["model"]), dataset_id(recipe["data"]["dataset"])
    before, after = metrics.get("eval_before", {}), metrics.get("eval_after", {})
    data_name = f"{data} ({recipe['data']['kind']}, {metrics['data']['eval_pairs']} held-out pairs)"
    eval_results = [
        EvalResult(task_type="text-generation", task_name="Preference modelling (DPO)", dataset_type=data,
                   dataset_name=data_name, dataset_split="eval", metric_type=key.removeprefix("eval_"),
                   metric_name=f"eval {label}", metric_value=round(after[key], 4))
        for key, label in RESULT_KEYS.items() if key in after
    ]
    card_data = ModelCardData(
        base_model=base, library_name="peft", pipeline_tag="text-generation",
        license=license or _MODEL_LICENSES.get(base, "other"), datasets=[data],
        tags=["dpo", "lora", "trl", "dpo-hub"], model_name=repo_id,
        eval_results=eval_results or None,
    )
    dpo = recipe["dpo"]
    return ModelCard.from_template(
        card_data, template_str=TEMPLATE, title=repo_id.split("/")[-1], repo_id=repo_id, base_model=base,
        base_link=f"https://huggingface.co/{base}", dataset=data, loss_type=dpo["loss_type"], beta=dpo["beta"],
        recipe_name=recipe.get("name", "custom"), fingerprint=metrics.get("fingerprint", ""),
        embedded_note=(metrics.get("embedded") or {}).get("what", ""),
        standin_note=(standins.stand_in_for(recipe["model"]["name"] if isinstance(recipe["model"], dict)
                                            else recipe["model"]) or {}).get("what", ""),
        results=[(label, _fmt(before.get(key)), _fmt(after.get(key))) for key, label in RESULT_KEYS.items()],
        comparison=_comparison_table(output_dir), generations=metrics.get("generations", []),
        hyperparameters=_hyperparameters(recipe, metrics), recipe_yaml=(output_dir / "recipe.yaml").read_text().strip(),
        versions=sorted(metrics.get("versions", {}).items()),
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _comparison_table(output_dir: Path) -> str:
    path = output_dir / "comparison.md"
    return path.read_text(encoding="utf-8").strip() if path.exists() else ""


def _hyperparameters(recipe: dict, metrics: dict) -> list[tuple[str, Any]]:
    dpo, lora = recipe["dpo"], recipe["lora"]
    rows = [(f"dpo.{k}", dpo[k]) for k in ("beta", "loss_type", "learning_rate", "num_train_epochs",
                                           "per_device_train_batch_size", "max_length", "precision")]
    rows += [(f"lora.{k}", lora[k]) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")]
    rows += [("effective batch", metrics.get("effective_batch_size")), ("processes", metrics.get("processes")),
             ("train pairs", metrics["data"]["train_pairs"]), ("eval pairs", metrics["data"]["eval_pairs"])]
    return rows
