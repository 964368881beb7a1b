"""argv -> recipe -> train -> push: what ``accelerate launch -m dpo_hub.recipes.NAME`` and ``dpo-hub train`` run.

Library code raises ``DpoHubError``; ``run_recipe`` is the one place of a recipe run that turns it into
an ``error: ...`` line and an exit code (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from dpo_hub.errors import DpoHubError, RecipeError, RunInterrupted
from dpo_hub.hub import check_push_target, push_adapter
from dpo_hub.recipe import Recipe
from dpo_hub.training import train


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--config FILE`` and ``--dotted.key value`` / ``--key=value`` pairs (a bare flag means true).

    A value that itself starts with ``--`` is passed as ``--key=--value``.
    """
    config, changes, items = None, {}, list(argv)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--") or token == "--":
            raise RecipeError(f"command line: expected --key value, got {token!r}")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value, i = items[i + 1], i + 1
            else:
                value = "true"
        if key == "config":
            config = value
        else:
            changes[key] = value
        i += 1
    return config, changes


def recipe_from_argv(base: Recipe, argv: Sequence[str]) -> Recipe:
    """``base`` (or ``--config``'s file) with the accelerate config's and the command line's overrides applied."""
    from dpo_hub.accelerate_config import accelerate_config_path, recipe_settings_from_accelerate_config

    config, changes = parse_overrides(argv)
    recipe = Recipe.from_yaml(config) if config else base
    accelerate_config = accelerate_config_path()
    if accelerate_config:  # the settings its '# dpo_hub:' line names; the command line still wins
        settings = recipe_settings_from_accelerate_config(accelerate_config)
        recipe = recipe.override(settings, source=f"{accelerate_config} ('# dpo_hub:' line)")
    return recipe.override(changes, source="command line")


def recipe_help(recipe: Recipe) -> str:
    """Every key of ``recipe`` with its value and help text (the fields' help is the single source)."""
    lines = ["Recipe keys (override with --key value, or --config FILE.yaml):"]
    groups = ("model", "data", "lora", "dpo", "generation")
    for head, obj in [("", recipe)] + [(h, getattr(recipe, h)) for h in groups]:
        for f in dataclasses.fields(obj):
            if head == "" and f.name in groups:
                continue
            key = f"{head}.{f.name}" if head else f.name
            lines.append(f"  --{key:<36} {getattr(obj, f.name)!r:<28} {f.metadata.get('help', '')}")
    return "\n".join(lines + ["  --debug                               show the traceback of an error"])


def run_recipe(base: Recipe, argv: Sequence[str] | None = None) -> int:
    """Entry of a recipe module: parse overrides, train, optionally push; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(recipe_help(base))
        return 0
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        try:
            recipe = recipe_from_argv(base, argv)
        except DpoHubError as err:
            raise _Usage(str(err)) from err
        if recipe.push_to_hub:  # before training, on every rank (one failing alone would leave the others waiting)
            check_push_target(recipe.push_to_hub)
        output_dir = train(recipe)
        from accelerate import PartialState

        if recipe.push_to_hub and PartialState().is_main_process:
            print(f"pushed to {push_adapter(output_dir, recipe.push_to_hub)}", flush=True)
    except DpoHubError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, _Usage) else 130 if isinstance(err, RunInterrupted) else 1
    return 0


class _Usage(RecipeError):
    """A command line or recipe file that cannot be used: exit code 2, before anything loads."""
