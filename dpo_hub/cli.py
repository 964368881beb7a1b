"""``dpo-hub`` command line: train a recipe, push/pull adapters, compare base and tuned models."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from dpo_hub.recipe import Recipe, RecipeError


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--config FILE`` and ``--dotted.key value`` / ``--key=value`` pairs (a bare flag means true)."""
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
    """``base`` (or ``--config``'s file) with the command line's overrides applied."""
    from dpo_hub.accelerate_config import accelerate_config_path, recipe_settings_from_accelerate_config

    config, changes = parse_overrides(argv)
    recipe = Recipe.from_yaml(config) if config else base
    accelerate_config = accelerate_config_path()
    if accelerate_config:  # the settings its '# dpo_hub:' line names; the command line still wins
        settings = recipe_settings_from_accelerate_config(accelerate_config)
        recipe = recipe.override(settings, source=f"{accelerate_config} ('# dpo_hub:' line)")
    return recipe.override(changes, source="command line")


def recipe_help(recipe: Recipe) -> str:
    lines = ["Recipe keys (override with --key value, or --config FILE.yaml):"]
    for head, obj in [("", recipe)] + [(h, getattr(recipe, h)) for h in ("data", "lora", "dpo", "generation")]:
        for f in dataclasses.fields(obj):
            if head == "" and f.name in ("data", "lora", "dpo", "generation"):
                continue
            key = f"{head}.{f.name}" if head else f.name
            lines.append(f"  --{key:<36} {getattr(obj, f.name)!r:<28} {f.metadata.get('help', '')}")
    return "\n".join(lines)


def run_recipe(base: Recipe, argv: Sequence[str] | None = None) -> int:
    """Entry of a recipe module: parse overrides, train, optionally push."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(recipe_help(base))
        return 0
    try:
        recipe = recipe_from_argv(base, argv)
    except (RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from dpo_hub.data import DataError
    from dpo_hub.hub import HubError, push_adapter
    from dpo_hub.outputs import OutputExistsError
    from dpo_hub.sources import SourceUnavailableError

    try:
        output_dir = recipe.train()
        from accelerate import PartialState

        if recipe.push_to_hub and PartialState().is_main_process:
            print(f"pushed to {push_adapter(output_dir, recipe.push_to_hub)}", flush=True)
    except (DataError, HubError, OutputExistsError, SourceUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dpo-hub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a recipe: dpo-hub train [--config FILE] [--key value ...]", add_help=False)
    push = sub.add_parser("push", help="publish a run's adapter and model card in one commit")
    push.add_argument("output_dir")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None, help="branch to push to (created if needed)")
    push.add_argument("--license", default=None, help="licence for the card (default: the base model's, else other)")
    pull = sub.add_parser("pull", help="download an adapter and load it onto its base model")
    pull.add_argument("repo_id")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--prompt", action="append", default=None, help="prompt to answer with base and tuned model")
    cmp = sub.add_parser("compare", help="compare base and tuned models on prompts and held-out pairs")
    cmp.add_argument("source", help="output folder or Hub repo id")
    cmp.add_argument("--prompt", action="append", default=None)
    cmp.add_argument("--pairs", default=None, help="preference file or dataset (default: the run's eval split)")
    cmp.add_argument("--judge", default=None, help="reward model id for a win rate")
    cmp.add_argument("--output", default=None, help="folder for comparison.json/md/png")
    cmp.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    if argv[:1] == ["train"]:
        from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

        return run_recipe(RECIPE, argv[1:])
    args = parser.parse_args(argv)
    from dpo_hub.data import DataError
    from dpo_hub.hub import HubError

    try:
        return _dispatch(args)
    except (DataError, HubError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    source = getattr(args, "source", None) or getattr(args, "output_dir", None)
    if source and source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"{source}: no such run folder")
    if args.command == "push":
        from dpo_hub.hub import push_adapter

        print(push_adapter(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                           license=args.license))
    elif args.command == "pull":
        from dpo_hub.hub import pull_cli

        pull_cli(args.repo_id, args.revision, args.prompt)
    elif args.command == "compare":
        from dpo_hub.compare import compare_cli

        return compare_cli(args)
    return 0

if __name__ == "__main__":
    sys.exit(main())
