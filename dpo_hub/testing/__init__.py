"""Testing utilities for ``dpo_hub`` (offline Hugging Face Hub server, fixtures)."""
