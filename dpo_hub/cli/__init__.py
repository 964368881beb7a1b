"""The command line, a thin layer on the Python API: ``dpo-hub`` and ``python -m dpo_hub.recipes.NAME``."""

from dpo_hub.cli.main import main

__all__ = ["main"]
