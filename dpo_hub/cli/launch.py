"""argv -> recipe -> train -> push: what ``accelerate launch -m dpo_hub.recipes.NAME`` and ``dpo-hub train``
run.

Library code raises ``DpoHubError``; ``run_recipe`` is the one place of a recipe run that turns it into
an ``error: ...`` line and an exit code (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence

from dpo_hub.cli.accelerate_config import launch_request
from dpo_hub.config.fields import field_help
from dpo_hub.errors import DpoHubError, RecipeError, RunInterrupted
from dpo_hub.hub.transfer import check_push_target, push_adapter
from dpo_hub.recipe import Recipe
from dpo_hub.sources.models import is_local
from dpo_hub.training.run import train
from dpo_hub.training.sweep import grid_points, parse_grid, sweep
from dpo_hub.training.topology import check_launch


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--config FILE`` and ``--dotted.key value`` / ``--key=value`` pairs (a bare flag means true).

    A value that itself starts with ``--`` is passed as ``--key=--value``.
    """
    config, changes, _ = _parse(argv)
    return config, changes


def _parse(argv: Sequence[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """``parse_overrides`` and the keys given as bare flags (only a true/false key may be one)."""
    config, changes, bare, items = None, {}, [], list(argv)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--") or token == "--":
            hint = ""
            if token.lower().endswith((".yaml", ".yml", ".json")):
                hint = f"; to train from a recipe file, pass --config {token}"
            raise RecipeError(f"command line: expected --key value, got {token!r}{hint}")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value, i = items[i + 1], i + 1
            else:
                value = "true"
                bare.append(key)
        if key == "config":
            if key in bare or not value:
                raise RecipeError("command line: --config needs a value: --config FILE.yaml")
            config = value
        else:
            changes[key] = value
        i += 1
    return config, changes, bare


def _check_bare_flags(recipe: Recipe, bare: list[str], typed: bool) -> None:
    """A bare ``--key`` means true: refuse it for a key that is not true/false (``--output_dir`` at the end
    of a command line must not train into ``./true``). ``typed``: by the recipe's field types (before the
    overrides), else by the values they gave (after them: trl/peft pass-through keys too)."""
    for key in bare:
        *heads, name = key.split(".")
        obj: object = recipe
        for head in heads:
            obj = getattr(obj, head, None)
        if typed:
            fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
            ok = name not in fields or "bool" in str(fields[name].type)  # not a field: the override speaks
        else:
            extra = getattr(obj, "extra", None)
            value = extra.get(name, True) if isinstance(extra, dict) else True
            ok = isinstance(getattr(obj, name, value), bool)
        if not ok:
            raise RecipeError(
                f"command line: --{key} needs a value (--{key} VALUE, or --{key}=--VALUE for one that starts "
                "with --); only a true/false key may be given bare"
            )


def recipe_from_argv(base: Recipe, argv: Sequence[str]) -> Recipe:
    """``base`` (or ``--config``'s file) with the accelerate config's and the command line's overrides
    applied."""
    from dpo_hub.cli.accelerate_config import accelerate_config_path, recipe_settings_from_accelerate_config

    config, changes, bare = _parse(argv)
    recipe = Recipe.from_yaml(config) if config else base
    accelerate_config = accelerate_config_path()
    if accelerate_config:  # the settings its '# dpo_hub:' line names; the command line still wins
        settings = recipe_settings_from_accelerate_config(accelerate_config)
        recipe = recipe.override(settings, source=f"{accelerate_config} ('# dpo_hub:' line)")
    _check_bare_flags(recipe, bare, typed=True)
    recipe = recipe.override(changes, source="command line")
    _check_bare_flags(recipe, bare, typed=False)
    return recipe


def recipe_help(recipe: Recipe) -> str:
    """Every key of ``recipe`` (its adapter and presets) with its value and help text (the fields' help)."""
    lines = ["Recipe keys (override with --key value, or --config FILE.yaml):"]
    groups = ("model", "data", "lora", "dpo", "generation")
    for head, obj in [("", recipe)] + [(h, getattr(recipe, h)) for h in groups]:
        for f in dataclasses.fields(obj):
            if head == "" and f.name in groups:
                continue
            key = f"{head}.{f.name}" if head else f.name
            if f.metadata.get("passthrough"):  # the settings made, then where the others are
                lines += [
                    f"  --{f'{head}.{name}':<36} {value!r:<28} {field_help(head, name)}"
                    for name, value in obj.extra.items()
                ]
                lines.append(f"  --{f'{head}.FIELD':<36} {'':<28} {f.metadata['help']}")
                continue
            lines.append(f"  --{key:<36} {getattr(obj, f.name)!r:<28} {f.metadata.get('help', '')}")
    lines.append(
        f"  --{'data.kind':<36} {recipe.data.kind!r:<28} switch adapter; --data.kind KIND --help lists its "
        "keys"
    )
    return "\n".join(lines + ["  --debug                               show the traceback of an error"])


def run_recipe(base: Recipe, argv: Sequence[str] | None = None) -> int:
    """Entry of a recipe module: parse overrides, train, optionally push; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):  # the keys of the adapter and presets the other flags choose
        try:
            print(
                recipe_help(recipe_from_argv(base, [a for a in argv if a not in ("-h", "--help", "--debug")]))
            )
        except DpoHubError as err:
            print(recipe_help(base))
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    with _stop_on_sigterm():
        try:
            return _run(base, argv, debug)
        except KeyboardInterrupt:
            if debug:
                raise
            return _fail(RunInterrupted(_INTERRUPTED), debug)


_INTERRUPTED = (  # outside the training loop (loading, evaluating, writing): no step to finish and save
    "interrupted; run the same command again to resume from the last complete checkpoint, if there is one"
)


def _run(base: Recipe, argv: list[str], debug: bool) -> int:
    try:
        try:
            recipe = recipe_from_argv(base, argv)
            check_launch(launch_request())  # a launch accelerate would quietly downgrade stops here
        except DpoHubError as err:
            raise _Usage(str(err)) from err
        if (
            recipe.push_to_hub
        ):  # before training, on every rank (one failing alone would leave the others waiting)
            if is_local(recipe.model.name):  # others could not load the adapter onto a local base
                raise _Usage(
                    f"push_to_hub: model {recipe.model.name!r} is a local path, which others cannot load the "
                    "adapter onto; train without push_to_hub, then dpo-hub push OUTPUT_DIR REPO_ID --base "
                    "HUB_ID_OF_THAT_MODEL"
                )
            check_push_target(recipe.push_to_hub)
        output_dir = train(recipe)
        from accelerate import PartialState

        if recipe.push_to_hub and PartialState().is_main_process:
            print(f"pushed to {push_adapter(output_dir, recipe.push_to_hub)}", flush=True)
    except DpoHubError as err:
        return _fail(err, debug)
    _leave_process_group()
    return 0


def run_sweep(base: Recipe, argv: Sequence[str]) -> int:
    """``dpo-hub sweep [--config FILE] --grid KEY=V1,V2 ... [--output_dir DIR] [--key value ...]``: exit
    code."""
    if any(a in ("-h", "--help") for a in argv):
        print(
            "usage: dpo-hub sweep [--config FILE] --grid KEY=V1,V2,... [--grid ...] [--output_dir DIR] "
            "[--key value ...]\n  every combination of the --grid values is trained into DIR/FINGERPRINT "
            "(default DIR: sweeps/RECIPE_NAME); finished points are skipped\n" + recipe_help(base)
        )
        return 0
    debug, grids, output, rest, items = "--debug" in argv, [], None, [], [a for a in argv if a != "--debug"]
    while items:
        token = items.pop(0)
        name, eq, value = token.partition("=")
        if name in ("--grid", "--output_dir"):
            if not eq:
                if not items:
                    return _fail(_Usage(f"command line: {name} needs a value"), debug)
                value = items.pop(0)
            grids += [value] if name == "--grid" else []
            output = value if name == "--output_dir" else output
        else:
            rest.append(token)
    with _stop_on_sigterm():
        try:
            return _run_sweep(base, rest, grids, output, debug)
        except KeyboardInterrupt:
            if debug:
                raise
            return _fail(RunInterrupted(_INTERRUPTED), debug)


def _run_sweep(base: Recipe, rest: list[str], grids: list[str], output: str | None, debug: bool) -> int:
    try:
        try:
            recipe = recipe_from_argv(base, rest)
            check_launch(launch_request())
            grid = parse_grid(grids)
            grid_points(recipe, grid)  # every point checked: a bad key or value is a usage error (exit 2)
        except DpoHubError as err:
            raise _Usage(str(err)) from err
        folder = sweep(recipe, grid, output or f"sweeps/{recipe.name}")
        from accelerate import PartialState

        if PartialState().is_main_process:
            print(f"sweep: {folder / 'sweep.md'}", flush=True)
    except DpoHubError as err:
        return _fail(err, debug)
    _leave_process_group()
    return 0


def _fail(err: DpoHubError, debug: bool) -> int:
    """One ``error: ...`` line on stderr and the exit code: 2 a bad recipe or command line (found before
    anything is written), 130 interrupted, 1 anything else (data, model, outputs, Hub)."""
    if debug:
        raise err
    every_rank = isinstance(err, (RecipeError, RunInterrupted))  # the same line on each: one rank says it
    if getattr(err, "shown_elsewhere", False):
        pass  # the main process's error, handed to this rank (``runtime.on_main``): the main prints it
    elif not every_rank or os.environ.get("LOCAL_RANK", "0") == "0":
        error_line(err)
    if getattr(err, "on_every_rank", False):  # no rank exits (and gets the others stopped) before it is said
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        _leave_process_group()
    return 2 if isinstance(err, RecipeError) else 130 if isinstance(err, RunInterrupted) else 1


def _leave_process_group() -> None:
    """Destroy the process group (what ``Trainer.end`` does), once every collective of the run has finished on
    this rank. Left to interpreter exit, gloo's worker threads can abort a rank that succeeded (SIGABRT,
    ``terminate called without an active exception``): torchrun then fails that machine, and on a multi-node
    job the other machine waits 300 s at torchrun's exit barrier. Not after an interrupt or a one-rank error:
    a rank still inside a collective would block here."""
    from accelerate import PartialState

    PartialState().destroy_process_group()


def error_line(err: BaseException) -> None:
    """Print ``error: ...`` on a line of its own: a progress bar cut short by the error is closed first."""
    bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
    for bar in list(getattr(bars, "_instances", ())):
        bar.close()
    print(f"error: {err}", file=sys.stderr, flush=True)


class _stop_on_sigterm:
    """While a recipe runs from the command line, SIGTERM stops it like Ctrl-C (once; later ones are ignored).

    ``accelerate launch`` answers Ctrl-C by sending its worker SIGTERM (then SIGKILL 5 s later): the worker
    then prints its one line and exits 130 instead of dying silently. In the training loop the
    checkpointing callback takes both signals over (checkpoint at the step's end, then stop).
    """

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            raised: list[int] = []

            def handler(signum: int, frame: object) -> None:
                if not raised:
                    raised.append(signum)
                    raise KeyboardInterrupt

            self.previous = signal.signal(signal.SIGTERM, handler)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _Usage(RecipeError):
    """A command line or recipe file that cannot be used: exit code 2, before anything loads."""
