"""Recipes, shipped and installed; each module runs with ``accelerate launch -m MODULE`` (or ``python -m``).

A recipe module has a docstring whose first line describes it, ``RECIPE`` (a ``dpo_hub.Recipe``) and
``main(argv=None) -> int`` (usually ``dpo_hub.cli.launch.run_recipe(RECIPE, argv)``). dpo_hub's own are
listed in ``SHIPPED``; another package adds one with an entry point in group ``dpo_hub.recipes`` naming
its module, e.g. in its pyproject.toml:
``[project.entry-points."dpo_hub.recipes"] theirs = "their_pkg.recipe"``.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from dpo_hub.plugins import RECIPES_GROUP, Origin, Registry
from dpo_hub.recipe import Recipe

SHIPPED = ("dpo_hub.recipes.gpt2_ultrafeedback", "dpo_hub.recipes.smollm2_truthfulqa")


@dataclass(frozen=True)
class InstalledRecipe:
    """One runnable recipe module and where it comes from."""

    name: str
    module: str
    description: str
    recipe: Recipe
    origin: Origin

    @property
    def command(self) -> str:
        return f"accelerate launch -m {self.module}"


@functools.cache
def registry() -> Registry:
    """Recipe name -> module: ``SHIPPED``, then the ``dpo_hub.recipes`` entry points (loaded once)."""
    return Registry(
        RECIPES_GROUP, {m.rpartition(".")[2]: import_module(m) for m in SHIPPED}, _check, "recipe"
    )


def installed_recipes() -> list[InstalledRecipe]:
    """Every usable recipe, shipped first; ``registry().broken`` says which plugins were skipped and why."""
    found = registry()
    return [
        InstalledRecipe(name, module.__name__, describe(module), module.RECIPE, found.origins[name])
        for name, module in found.items()
    ]


def describe(module: types.ModuleType) -> str:
    return (
        (module.__doc__ or "").strip().splitlines()[0]
        if (module.__doc__ or "").strip()
        else "(no description)"
    )


def _check(name: str, obj: Any) -> str | None:
    """Why an entry point of ``dpo_hub.recipes`` is no runnable recipe module, or None."""
    if not isinstance(obj, types.ModuleType):
        return (
            f"it is {type(obj).__name__} {obj!r}, not a module; name the recipe's module (runnable with -m)"
        )
    if not isinstance(getattr(obj, "RECIPE", None), Recipe):
        return f"module {obj.__name__} has no RECIPE that is a dpo_hub.Recipe"
    if not callable(getattr(obj, "main", None)):
        return f"module {obj.__name__} has no main(argv) function"
    return None


def format_installed() -> str:
    """What ``dpo-hub recipes`` prints: each recipe, its description and command; the data kinds; skipped
    plugins."""
    from dpo_hub.data.adapters import ADAPTERS

    lines = ["Recipes (run one with its command; add --help for its keys, --config FILE.yaml for a file):"]
    for found in installed_recipes():
        lines += [f"  {found.name}  {found.description}{_by(found.origin)}", f"      {found.command}"]
    kinds = ", ".join(f"{kind}{_by(ADAPTERS.origins[kind])}" for kind in ADAPTERS)
    lines.append(f"Data adapters (data.kind): {kinds}")
    broken = [*registry().broken.values(), *ADAPTERS.broken.values()]
    return "\n".join(lines + (["Skipped plugins:", *(f"  {why}" for why in broken)] if broken else []))


def _by(origin: Origin) -> str:
    return "" if origin.distribution == "dpo-hub" else f" [{origin.distribution} {origin.version}]"
