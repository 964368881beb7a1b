"""``dpo-hub`` command line: train a recipe, push/pull adapters, compare base and tuned models.

A thin layer on the Python API: it parses arguments, calls the library, prints, and turns any
``DpoHubError`` into one ``error: ...`` line and exit code 1 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dpo_hub.compare import side_by_side
from dpo_hub.compare_report import format_side_by_side, format_table
from dpo_hub.errors import DpoHubError, OutputError
from dpo_hub.hub import push_adapter
from dpo_hub.launch import run_recipe
from dpo_hub.presets import Generation
from dpo_hub.runs import compare_run, open_repo


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dpo-hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    for side in ("prompt", "chosen", "rejected"):
        cmp.add_argument(f"--{side}-column", default=None, help=f"column of --pairs holding the {side} (default: {side})")
    cmp.add_argument("--max-length", type=int, default=None,
                     help="tokens scored per sequence, cut like training (default: the run's dpo.max_length)")
    if argv[:1] == ["train"]:
        from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

        return run_recipe(RECIPE, argv[1:])
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except DpoHubError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    source = getattr(args, "source", None) or getattr(args, "output_dir", None)
    if source and source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().is_dir():
        raise OutputError(f"{source}: no such run folder")
    if args.command == "push":
        print(push_adapter(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                           license=args.license))
    elif args.command == "pull":
        run = open_repo(args.repo_id, args.revision)
        print(f"loaded {args.repo_id}@{args.revision or 'main'} onto "
              f"{run.model.peft_config['default'].base_model_name_or_path}")
        settings = Generation(prompts=tuple(args.prompt)) if args.prompt else Generation()
        prompt_text = (lambda p: run.recipe.data.prompt_text(p, run.tokenizer)) if run.recipe else None
        print(format_side_by_side(side_by_side(run.model, run.tokenizer, settings, prompt_text)))
    elif args.command == "compare":
        local = Path(args.source).is_dir()
        name = args.source.rstrip("/").split("/")[-1]
        output = Path(args.output or (args.source if local else f"comparison-{name}"))
        columns = {f"{side}_column": getattr(args, f"{side}_column") for side in ("prompt", "chosen", "rejected")
                   if getattr(args, f"{side}_column")}
        comparison = compare_run(args.source, prompts=args.prompt, pairs=args.pairs, judge=args.judge,
                                 output_dir=output, revision=args.revision, max_length=args.max_length, columns=columns)
        print(format_table(comparison))
        print(f"\nwrote {output / 'comparison.json'}, comparison.md, comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
