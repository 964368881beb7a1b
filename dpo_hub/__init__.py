"""dpo_hub: composable, reproducible DPO recipes that publish to the Hugging Face Hub.

Packages in the order data flows; each imports only from those before it (``tests/test_layers.py``):

- base: ``errors``, ``runtime`` (device, threads, precision, logging, cache folder), ``upstream`` (every
  private name of trl/transformers/accelerate that dpo_hub uses, probed), ``plugins``, ``embedded``
- ``config``: presets (LoRA, DPO, generation), the model group, trl/peft fields passed through, typed values
- ``sources``: models, tokenizers and datasets from the Hub, local paths, GGUF, ``auto`` and pip stand-ins
- ``data``: dataset adapters -> prompt/chosen/rejected pairs, files, held-out splits, mixtures
- ``recipe``: the ``Recipe`` (pure data: schema, YAML, overrides, fingerprint)
- ``artifacts``: run folders that appear only when complete, JSON, plots
- ``compare``: base vs tuned on the same pairs (scoring, report, side-by-side answers)
- ``training``: preflight, the one boundary with trl (``upstream``, ``trainer``), levers, reference cache,
  plan, checkpoints, ``train`` and ``sweep``
- ``hub``: card, push/download, runs opened back from a folder or repo, merge
- ``export``: GGUF for llama.cpp/Ollama by llama.cpp's own converter, verified; GGUF LoRA, Modelfile, push
- ``cli`` and ``recipes``: what users type (``dpo-hub``, ``accelerate launch -m dpo_hub.recipes.NAME``)
"""

from dpo_hub import runtime  # noqa: F401  first: it imports bitsandbytes before peft does (its docstring)
from dpo_hub.compare.base_vs_tuned import compare_model
from dpo_hub.compare.report import Comparison
from dpo_hub.config.model import ModelSpec
from dpo_hub.config.presets import DPO_PRESETS, LORA_PRESETS, DPOPreset, Generation, LoraPreset
from dpo_hub.data.adapters import HHRLHF, Preferences, Selection, UltraFeedback, prepare
from dpo_hub.data.mixture import MixSource, Mixture
from dpo_hub.errors import (
    CompareError,
    DataError,
    DpoHubError,
    ExportError,
    HubError,
    MergeError,
    OutputError,
    OutputExistsError,
    RecipeError,
    RunInterrupted,
    SourceUnavailableError,
)
from dpo_hub.export.gguf import export_gguf, push_gguf
from dpo_hub.hub.card import build_card
from dpo_hub.hub.merge import merge_adapter, push_merged
from dpo_hub.hub.runs import Run, compare_run, open_run, pull_adapter
from dpo_hub.hub.transfer import download_adapter, push_adapter
from dpo_hub.recipe import Recipe
from dpo_hub.training.run import train
from dpo_hub.training.sweep import sweep

__version__ = "0.1.0"
__all__ = [
    "DPO_PRESETS",
    "HHRLHF",
    "LORA_PRESETS",
    "CompareError",
    "Comparison",
    "DPOPreset",
    "DataError",
    "DpoHubError",
    "ExportError",
    "Generation",
    "HubError",
    "LoraPreset",
    "MergeError",
    "MixSource",
    "Mixture",
    "ModelSpec",
    "OutputError",
    "OutputExistsError",
    "Preferences",
    "Recipe",
    "RecipeError",
    "Run",
    "RunInterrupted",
    "Selection",
    "SourceUnavailableError",
    "UltraFeedback",
    "build_card",
    "compare_model",
    "compare_run",
    "download_adapter",
    "export_gguf",
    "merge_adapter",
    "open_run",
    "prepare",
    "pull_adapter",
    "push_adapter",
    "push_gguf",
    "push_merged",
    "sweep",
    "train",
]
