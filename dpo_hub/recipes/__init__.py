"""Shipped recipes; each module runs with ``accelerate launch -m dpo_hub.recipes.NAME`` (or ``python -m``)."""
