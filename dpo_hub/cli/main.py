"""``dpo-hub`` command line: train a recipe, push/pull adapters, compare base and tuned models.

A thin layer on the Python API: it parses arguments, calls the library, prints, and turns any
``DpoHubError`` into one ``error: ...`` line and exit code 1 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpo_hub.cli.accelerate_launch import USAGE, run_launch
from dpo_hub.cli.launch import run_recipe, run_sweep
from dpo_hub.compare.base_vs_tuned import side_by_side
from dpo_hub.compare.report import format_side_by_side, format_table
from dpo_hub.config.presets import Generation
from dpo_hub.data.adapters import prompt_formatter
from dpo_hub.errors import DataError, DpoHubError, OutputError
from dpo_hub.export.converter import GGUF_TYPES
from dpo_hub.export.gguf import export_gguf, push_gguf
from dpo_hub.export.verify import format_verification
from dpo_hub.hub.merge import DTYPES, merge_adapter, push_merged
from dpo_hub.hub.runs import compare_run, comparison_dir, open_repo
from dpo_hub.hub.transfer import check_push_target, push_adapter
from dpo_hub.recipes import format_installed
from dpo_hub.runtime import quiet_known_noise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dpo-hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train", help="train a recipe: dpo-hub train [--config FILE] [--key value ...]", add_help=False
    )
    sub.add_parser(
        "sweep",
        add_help=False,
        help="train a grid of recipes: dpo-hub sweep --config FILE "
        "--grid dpo.beta=0.05,0.1 [--grid lora.r=4,8] [--output_dir sweeps/NAME] [--key value ...]",
    )
    sub.add_parser(
        "launch",
        add_help=False,
        help=f"accelerate launch with one-line errors and dpo_hub's exit codes: {USAGE}",
    )
    push = sub.add_parser("push", help="publish a run's adapter and model card in one commit")
    push.add_argument("output_dir")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None, help="branch to push to (created if needed)")
    push.add_argument(
        "--license", default=None, help="licence for the card (default: the base model's, else other)"
    )
    push.add_argument(
        "--base",
        default=None,
        metavar="REPO_ID",
        help="Hub id of the base model, for an adapter trained from a local folder (recorded in the pushed "
        "adapter_config.json and card)",
    )
    push.add_argument(
        "--force", action="store_true", help="replace an adapter of another base model already in the repo"
    )
    pull = sub.add_parser("pull", help="download an adapter and load it onto its base model")
    pull.add_argument("repo_id")
    pull.add_argument("--revision", default=None)
    pull.add_argument(
        "--prompt", action="append", default=None, help="prompt to answer with base and tuned model"
    )
    cmp = sub.add_parser("compare", help="compare base and tuned models on prompts and held-out pairs")
    cmp.add_argument("source", help="output folder or Hub repo id")
    cmp.add_argument("--prompt", action="append", default=None)
    cmp.add_argument(
        "--pairs", default=None, help="preference file or dataset (default: the run's eval split)"
    )
    cmp.add_argument("--judge", default=None, help="reward model id for a win rate")
    cmp.add_argument(
        "--output",
        default=None,
        help="folder for comparison.json/md/png (default: a new "
        "RUN_DIR/comparisons/TIME folder; a repo: ./comparison-NAME)",
    )
    cmp.add_argument("--overwrite", action="store_true", help="replace a comparison already in --output")
    cmp.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    merge = sub.add_parser("merge", help="merge a run's adapter into its base: a standalone model folder")
    merge.add_argument("source", help="run folder or Hub repo id of an adapter")
    merge.add_argument(
        "--output", required=True, help="folder for the merged model (appears only when complete)"
    )
    merge.add_argument(
        "--dtype", default=None, choices=DTYPES, help="dtype written (default: the base model's)"
    )
    merge.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    merge.add_argument(
        "--push", default=None, metavar="REPO", help="then publish the merged model to this Hub repo"
    )
    merge.add_argument("--private", action="store_true", help="with --push: create the repo private")
    export = sub.add_parser(
        "export", help="a run as GGUF for llama.cpp/Ollama (llama.cpp's converter), verified; + GGUF LoRA"
    )
    export.add_argument("source", help="run folder or Hub repo id of an adapter")
    export.add_argument("--gguf", required=True, choices=GGUF_TYPES, help="GGUF type of the model file")
    export.add_argument(
        "--output", required=True, help="folder for the GGUF files (appears only when verified)"
    )
    export.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")
    export.add_argument(
        "--push", default=None, metavar="REPO", help="then publish the GGUF repo with its card"
    )
    export.add_argument("--private", action="store_true", help="with --push: create the repo private")
    sub.add_parser("recipes", help="list installed recipes, the command that runs each, and data adapters")
    for side in ("prompt", "chosen", "rejected"):
        cmp.add_argument(
            f"--{side}-column", default=None, help=f"column of --pairs holding the {side} (default: {side})"
        )
    cmp.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens scored per sequence, cut like training (default: the run's dpo.max_length for its eval "
        "split; --pairs are scored whole, up to the model's context length)",
    )
    if argv[:2] == ["--debug", "launch"]:
        return run_launch(argv[2:], debug=True)
    if argv[:1] == ["launch"]:
        return run_launch(argv[1:])
    if argv[:1] == ["--debug"] and argv[1:2] in (["train"], ["sweep"]):  # dpo-hub --debug train ...
        argv = [argv[1], "--debug", *argv[2:]]
    if argv[:1] == ["train"]:
        from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

        return run_recipe(RECIPE, argv[1:])
    if argv[:1] == ["sweep"]:
        from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

        return run_sweep(RECIPE, argv[1:])
    args = parser.parse_args(argv)
    quiet_known_noise()  # pull, compare and merge show what concerns the user, as train does
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
        pushed = push_adapter(
            args.output_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            license=args.license,
            base=args.base,
            force=args.force,
        )
        print(
            pushed if pushed.changed else f"nothing changed: {args.repo_id} already holds this run ({pushed})"
        )
    elif args.command == "pull":
        run = open_repo(args.repo_id, args.revision)
        print(
            f"loaded {args.repo_id}@{args.revision or 'main'} onto "
            f"{run.model.peft_config['default'].base_model_name_or_path}"
        )
        settings = Generation(prompts=tuple(args.prompt)) if args.prompt else Generation()
        prompt_text = prompt_formatter(run.recipe.data, run.tokenizer) if run.recipe else None
        print(format_side_by_side(side_by_side(run.model, run.tokenizer, settings, prompt_text)))
    elif args.command == "merge":
        if args.push:  # before the merge: a push that cannot succeed should cost nothing
            check_push_target(args.push)
        folder = merge_adapter(args.source, args.output, args.dtype, args.revision, overwrite=args.overwrite)
        print(f"wrote {folder} (model.safetensors, tokenizer, generation_config.json, README.md)")
        if args.push:
            print(f"pushed to {push_merged(folder, args.push, private=args.private)}")
    elif args.command == "export":
        if args.push:
            check_push_target(args.push)
        folder = export_gguf(args.source, args.output, args.gguf, args.revision, overwrite=args.overwrite)
        info = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        print(f"wrote {folder}: {', '.join(f['name'] for f in info['files'])}, Modelfile, README.md")
        print(format_verification(info["verification"]))
        if args.push:
            print(f"pushed to {push_gguf(folder, args.push, private=args.private)}")
    elif args.command == "recipes":
        print(format_installed())
    elif args.command == "compare":
        output = Path(args.output) if args.output else comparison_dir(args.source, args.pairs)
        columns = {
            f"{side}_column": getattr(args, f"{side}_column")
            for side in ("prompt", "chosen", "rejected")
            if getattr(args, f"{side}_column")
        }
        try:
            comparison = _compare(args, output, columns)
        except DataError as err:  # a --pairs file: name compare's flags, not the recipe keys they set
            if not args.pairs:
                raise
            raise DataError(_as_compare_flags(str(err))) from err
        print(format_table(comparison))
        print(f"\nwrote {output / 'comparison.json'}, comparison.md, comparison.png")
    return 0


_COMPARE_FLAGS = {  # the recipe keys a pairs file's errors name -> the compare flag that sets each
    " (data.kind=preferences)": "",
    "data.prompt_column/chosen_column/rejected_column": "--prompt-column/--chosen-column/--rejected-column",
    "data.prompt_column": "--prompt-column",
    "data.chosen_column": "--chosen-column",
    "data.rejected_column": "--rejected-column",
    "data.dataset": "--pairs",
}


def _as_compare_flags(message: str) -> str:
    for key, flag in _COMPARE_FLAGS.items():
        message = message.replace(key, flag)
    return message


def _compare(args: argparse.Namespace, output: Path, columns: dict[str, str]) -> Any:
    return compare_run(
        args.source,
        prompts=args.prompt,
        pairs=args.pairs,
        judge=args.judge,
        output_dir=output,
        revision=args.revision,
        overwrite=args.overwrite,
        max_length=args.max_length,
        columns=columns,
    )


if __name__ == "__main__":
    sys.exit(main())
