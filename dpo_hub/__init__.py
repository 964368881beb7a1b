"""dpo_hub: composable, reproducible DPO recipes that publish to the Hugging Face Hub."""

from dpo_hub.card import build_card
from dpo_hub.data import HHRLHF, DataError, Preferences, UltraFeedback, prepare
from dpo_hub.hub import HubError, pull_adapter, push_adapter
from dpo_hub.presets import DPOPreset, LoraPreset
from dpo_hub.recipe import Generation, Recipe, RecipeError

__version__ = "0.1.0"
__all__ = [
    "DPOPreset", "DataError", "Generation", "HHRLHF", "HubError", "LoraPreset", "Preferences", "Recipe",
    "RecipeError", "UltraFeedback", "build_card", "prepare", "pull_adapter", "push_adapter",
]
