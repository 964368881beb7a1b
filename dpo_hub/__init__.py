"""dpo_hub: composable, reproducible DPO recipes that publish to the Hugging Face Hub.

Layers, each importing only from those above it in this list (``tests/test_layers.py`` checks it):

0. ``errors``, ``embedded``, ``outputs``, ``checkpoints``, ``plots``, ``runtime``, ``accelerate_config``,
   ``plugins`` (entry point registries), ``speedups``, ``cpu_head`` and ``cpu_rows`` (CPU levers on trl's LM
   head and the backbone's rows), ``reference_logps``, ``plan``, ``losses`` (trl's loss
   types), ``coercion`` (typed values), ``passthrough`` (any DPOConfig/LoraConfig field), ``trackers`` (report_to),
   ``standins`` (real models/data fetched with pip when the Hub is out of reach), ``model_spec`` (the ``model``
   group): no dpo_hub imports but ``errors``/``embedded``/``outputs``
1. ``sources`` (models, tokenizers, adapters, ``auto``), ``presets`` (LoRA, DPO, generation; by name), ``data_files``,
   ``pair_text``, ``splits``, ``data``, ``mixture`` (several adapters mixed by rows or weights)
2. ``recipe``: pure data (schema, YAML, overrides, fingerprint); ``preflight``: checks before anything loads
3. ``compare_scoring``, ``compare_report``, ``compare``: base vs tuned with explicit parameters
4. ``card``, ``hub_errors``, ``hub``: the model card; Hub failures as one line, retries; push and download
5. ``training`` (``train``: recipe -> run folder), ``runs`` (a run folder or Hub repo back as model + recipe),
   ``sweep`` (a grid of recipes, one run folder per point), ``merge`` (adapter merged into its base: a standalone
   model folder, pushed like a run)
6. ``launch`` (argv -> recipe -> train -> push), ``cli``, ``recipes`` (shipped and installed recipe modules),
   ``recipes.*`` (``smollm2_truthfulqa``,
   ``gpt2_ultrafeedback``)
"""

from dpo_hub.card import build_card
from dpo_hub.compare import compare_model
from dpo_hub.compare_report import Comparison
from dpo_hub.data import HHRLHF, Preferences, Selection, UltraFeedback, prepare
from dpo_hub.errors import (
    CompareError,
    DataError,
    DpoHubError,
    HubError,
    MergeError,
    OutputError,
    OutputExistsError,
    RecipeError,
    RunInterrupted,
    SourceUnavailableError,
)
from dpo_hub.hub import download_adapter, push_adapter
from dpo_hub.merge import merge_adapter, push_merged
from dpo_hub.mixture import MixSource, Mixture
from dpo_hub.model_spec import ModelSpec
from dpo_hub.presets import DPO_PRESETS, LORA_PRESETS, DPOPreset, Generation, LoraPreset
from dpo_hub.recipe import Recipe
from dpo_hub.runs import Run, compare_run, open_run, pull_adapter
from dpo_hub.sweep import sweep
from dpo_hub.training import train

__version__ = "0.1.0"
__all__ = [
    "DPO_PRESETS", "HHRLHF", "LORA_PRESETS", "CompareError", "Comparison", "DPOPreset", "DataError", "DpoHubError",
    "Generation", "HubError", "LoraPreset", "MergeError", "MixSource", "Mixture", "ModelSpec", "OutputError", "OutputExistsError",
    "Preferences", "Recipe", "RecipeError", "Run", "RunInterrupted", "Selection", "SourceUnavailableError",
    "UltraFeedback", "build_card", "compare_model", "compare_run", "download_adapter", "merge_adapter", "open_run",
    "prepare", "pull_adapter", "push_adapter", "push_merged", "sweep", "train",
]
