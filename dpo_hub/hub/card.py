"""The model card of a run, built with ``huggingface_hub.ModelCard``: metadata, metrics, recipe, curve."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from dpo_hub import embedded
from dpo_hub.compare.report import Comparison, table_rows
from dpo_hub.config.losses import describe_losses
from dpo_hub.sources import standins
from dpo_hub.sources.models import is_local
from dpo_hub.training.topology import Distributed

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A LoRA adapter for `{{ base_model }}` trained with Direct Preference Optimization
(trl's `DPOTrainer`, loss `{{ loss_type }}`, beta {{ beta }}) on {{ dataset }} by the
dpo_hub recipe `{{ recipe_name }}` (fingerprint `{{ fingerprint }}`).
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
model, tokenizer = AutoPeftModelForCausalLM.from_pretrained("{{ repo_id }}"), \
AutoTokenizer.from_pretrained("{{ repo_id }}")
```

With dpo_hub: `model, tokenizer = dpo_hub.pull_adapter("{{ repo_id }}")`

{% if sources %}## Data

| source | train pairs | share | held-out pairs | asked |
|---|---|---|---|---|
{% for s in sources %}{{ s.row }}
{% endfor %}
Each source was split on its own (held-out groups never trained on); the held-out set is the union of theirs.
{% endif %}
## Results

| metric (held-out pairs) | before | after |
|---|---|---|
{% for name, before, after in results %}| {{ name }} | {{ before }} | {{ after }} |
{% endfor %}

![training curve](loss.png)
{% if comparison %}
## Base vs tuned on held-out pairs

{{ comparison }}
{% endif %}
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

RESULT_KEYS = {
    "eval_loss": "loss",
    "eval_rewards/accuracies": "reward accuracy",
    "eval_rewards/margins": "reward margin",
}
_MODEL_LICENSES = {"gpt2": "mit", "openai-community/gpt2": "mit", embedded.EMBEDDED_MODEL_ID: "mit"}


def base_model_id(recipe_model: str | dict) -> str:
    """The base model's id from a recipe's ``model`` (a name, or the model group as read from recipe.yaml)."""
    name = recipe_model.get("name", "") if isinstance(recipe_model, dict) else recipe_model
    if name == embedded.EMBEDDED:
        return embedded.EMBEDDED_MODEL_ID
    return (standins.stand_in_for(name) or {}).get(
        "hub_id", name
    )  # a pip stand-in: the Hub model it stands for


def dataset_id(dataset: str) -> str:
    """The Hub id of a dataset; a local file is named by its file name only (no local path on a card)."""
    if dataset == embedded.EMBEDDED:
        return embedded.EMBEDDED_DATASET_ID
    return Path(dataset).name if is_local(dataset) else dataset


def build_card(
    output_dir: str | Path, repo_id: str, license: str | None = None, base: str | None = None
) -> ModelCard:
    """The card for the finished run in ``output_dir`` as it will live at ``repo_id`` (``base``: the Hub id
    of its base model, when the run names it by a local path)."""
    output_dir = Path(output_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    sources = _sources(recipe["data"], metrics["data"])
    base, datasets = (
        base or base_model_id(recipe["model"]),
        list(dict.fromkeys(s["dataset"] for s in sources)),
    )
    before, after = metrics.get("eval_before", {}), metrics.get("eval_after", {})
    kinds = "+".join(dict.fromkeys(s["kind"] for s in sources))
    data_name = f"{' + '.join(datasets)} ({kinds}, {metrics['data']['eval_pairs']} held-out pairs)"
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Preference modelling (DPO)",
            dataset_type=datasets[0],
            dataset_name=data_name,
            dataset_split="eval",
            metric_type=key.removeprefix("eval_"),
            metric_name=f"eval {label}",
            metric_value=round(after[key], 4),
        )
        for key, label in RESULT_KEYS.items()
        if key in after
    ]
    card_data = ModelCardData(
        base_model=base,
        library_name="peft",
        pipeline_tag="text-generation",
        license=license or _MODEL_LICENSES.get(base, "other"),
        datasets=datasets,
        tags=["dpo", "lora", "trl", "dpo-hub"],
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    dpo = recipe["dpo"]
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base,
        dataset=" + ".join(f"`{d}`" for d in datasets),
        beta=dpo["beta"],
        loss_type=describe_losses(dpo["loss_type"], dpo.get("loss_weights")),
        recipe_name=recipe.get("name", "custom"),
        fingerprint=metrics.get("fingerprint", ""),
        embedded_note=(metrics.get("embedded") or {}).get("what", ""),
        sources=sources if len(sources) > 1 or recipe["data"].get("kind") == "mix" else [],
        standin_note=(
            standins.stand_in_for(
                recipe["model"]["name"] if isinstance(recipe["model"], dict) else recipe["model"]
            )
            or {}
        ).get("what", ""),
        results=[(label, _fmt(before.get(key)), _fmt(after.get(key))) for key, label in RESULT_KEYS.items()],
        comparison=_comparison_section(output_dir),
        generations=metrics.get("generations", []),
        hyperparameters=_hyperparameters(recipe, metrics),
        recipe_yaml=_recipe_text(output_dir),
        versions=sorted(metrics.get("versions", {}).items()),
    )


def _sources(data: dict, counts: dict) -> list[dict[str, Any]]:
    """Every source of the run with its share: a mixture's from metrics.json, else the one adapter's."""
    if counts.get("sources"):
        asked = [
            f"{s['rows']} rows" if s.get("rows") else f"weight {s['weight']}" if s.get("weight") else "all"
            for s in counts["sources"]
        ]
        return [
            {
                **s,
                "dataset": dataset_id(s["dataset"]),
                "row": f"| {s['kind']}: `{dataset_id(s['dataset'])}` | {s['train_pairs']} | "
                f"{100 * s['share']:.1f}% | {s['eval_pairs']} | {how} |",
            }
            for s, how in zip(counts["sources"], asked)
        ]
    return [
        {
            "kind": data["kind"],
            "dataset": dataset_id(data["dataset"]),
            "train_pairs": counts["train_pairs"],
            "eval_pairs": counts["eval_pairs"],
        }
    ]


def _recipe_text(output_dir: Path) -> str:
    """recipe.yaml without its header comment (it names the run's local folder)."""
    lines = (output_dir / "recipe.yaml").read_text(encoding="utf-8").strip().splitlines()
    return "\n".join(lines[next((i for i, line in enumerate(lines) if not line.startswith("#")), 0) :])


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _comparison_section(output_dir: Path) -> str:
    """The comparison table from comparison.json, as part of the card (no title, path or generations of its
    own)."""
    path = output_dir / "comparison.json"
    if not path.exists():
        return ""
    values = json.loads(path.read_text(encoding="utf-8"))
    comparison = Comparison(
        **{f.name: values[f.name] for f in dataclasses.fields(Comparison) if f.name in values}
    )
    p = comparison.preference
    lines = [
        f"On the run's {p['n_pairs']} held-out pairs; the base is the same "
        "weights with the adapter off; 95% confidence intervals (Wilson for shares)."
        if p
        else "No pairs.",
        "",
        "| metric | base | tuned | change |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {' | '.join(cell.replace('|', '&#124;') for cell in row)} |"
        for row in table_rows(dataclasses.replace(comparison, generations=[]))
    ]
    if p:
        lines += [
            "",
            "Accuracy: share of pairs whose chosen answer gets the higher log-probability. Margin: beta x "
            "[(tuned - base) log-prob of chosen - (tuned - base) of rejected].",
            "",
            "![base vs tuned](comparison.png)",
        ]
    return "\n".join(lines)


def _hyperparameters(recipe: dict, metrics: dict) -> list[tuple[str, Any]]:
    dpo, lora = recipe["dpo"], recipe["lora"]
    loss = describe_losses(dpo["loss_type"], dpo.get("loss_weights"))  # each loss with its weight
    rows = [
        (f"dpo.{k}", loss if k == "loss_type" else dpo[k])
        for k in (
            "beta",
            "loss_type",
            "learning_rate",
            "num_train_epochs",
            "per_device_train_batch_size",
            "max_length",
        )
    ]
    resolved = (metrics.get("precision") or {}).get("resolved")  # what auto became on the training machine
    precision = dpo["precision"]
    rows.append(
        (
            "dpo.precision",
            f"{precision} (ran in {resolved})" if resolved not in (None, precision) else precision,
        )
    )
    rows += [(f"lora.{k}", lora[k]) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")]
    rows += [
        ("effective batch", metrics.get("effective_batch_size")),
        ("processes", metrics.get("processes")),
        ("distributed", _distributed(metrics.get("distributed"))),
        ("peak memory per rank", _peak_memory(metrics.get("distributed"))),
        ("quantization", metrics.get("quantization") or "none (full-precision base)"),
        ("train pairs", metrics["data"]["train_pairs"]),
        ("eval pairs", metrics["data"]["eval_pairs"]),
    ]
    return rows


def _distributed(record: dict | None) -> str:
    """``metrics.json``'s ``distributed`` in words (runs before it was recorded: "not recorded")."""
    return Distributed(**record).describe() if record else "not recorded"


def _peak_memory(record: dict | None) -> str:
    """Each rank's peak memory in words, and what was measured."""
    return Distributed(**record).describe_memory() if record else "not recorded"


def model_license(base: str) -> str:
    """The licence of a base model dpo_hub knows, else ``other``."""
    return _MODEL_LICENSES.get(base, "other")
