"""``dpo-hub launch``: accelerate's own launcher run in this process, with dpo_hub's errors and exit codes.

``accelerate launch`` (1.16) turns a failed worker into exit code 1 and a ``CalledProcessError`` traceback
that repeats the worker's stderr (with several processes: torchrun's ``ChildFailedError`` report), and its
own failures (a missing or malformed ``--config_file``) into tracebacks; none of that runs in dpo_hub's
worker, so the worker cannot change it. ``launch`` takes exactly ``accelerate launch``'s arguments, parses
them with accelerate's parser and runs accelerate's ``launch_command`` (the same launchers), and around it:

- before anything starts, the config file and the ``-m`` module are checked: one ``RecipeError`` line;
- a failed worker has printed its own line: its exit code is passed through (2 bad input, 130 Ctrl-C, the
  worker's code otherwise) and nothing is added (a worker killed by a signal gets one line, 128 + signal);
- Ctrl-C is not answered by killing the workers: each is asked to stop once (SIGTERM, or SIGINT to a
  torchrun worker in its own session, which the terminal's Ctrl-C does not reach), saves at the end of
  its step and exits 130; a second Ctrl-C hurries it, as under ``python -m``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dpo_hub import upstream
from dpo_hub.errors import DpoHubError, RecipeError, RunInterrupted

USAGE = "dpo-hub launch [accelerate launch arguments] -m dpo_hub.recipes.NAME [--key value ...]"
EPILOG = (
    "Takes exactly the arguments of `accelerate launch` and runs accelerate's own launcher. Differences: "
    "a failure prints one 'error: ...' line (the worker's, or the launcher's for a missing or malformed "
    "--config_file or a -m module that does not exist) and no traceback, and the exit code is the "
    "worker's: 0 done, 2 bad input (nothing created), 130 interrupted (Ctrl-C: the step under way finishes "
    "and is saved; a second Ctrl-C stops at once), 1 any other failure, 128+N a worker killed by signal N. "
    "--quiet changes nothing here (there is no launcher traceback). "
    "Recipe keys: python -m dpo_hub.recipes.NAME --help."
)


_BEFORE_WORKERS = (  # accelerate's own Ctrl-C exit: before a worker ran (or as one was starting)
    "interrupted; run the same command again to resume from the last complete checkpoint, if there is one"
)


class WorkerDied(DpoHubError):
    """A worker ended by a signal it did not handle (no line of its own): ``code`` is 128 + the signal."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def launch_parser() -> argparse.ArgumentParser:
    """accelerate's own ``accelerate launch`` parser, named ``dpo-hub launch``; its usage errors raise
    ``RecipeError`` (one line) instead of exiting."""
    parser = upstream.get(upstream.ACCELERATE_LAUNCH_PARSER)()
    parser.prog, parser.usage, parser.epilog = "dpo-hub launch", USAGE, EPILOG
    parser.description = "accelerate launch, with dpo_hub's one-line errors and exit codes."

    def error(message: str) -> None:
        raise RecipeError(f"dpo-hub launch: {message}; dpo-hub launch --help lists the arguments")

    parser.error = error  # type: ignore[method-assign]
    return parser


def launch(argv: Sequence[str]) -> int:
    """Run ``accelerate launch ARGV`` in this process; the worker's exit code. ``RecipeError`` when the
    launch cannot start (config file, module, arguments), ``WorkerDied`` for a worker killed by a signal."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    saved, sys.argv = sys.argv, ["accelerate", "launch", *argv]  # its help formatter reads sys.argv
    try:
        args = launch_parser().parse_args(list(argv))  # -h/--help: argparse prints the help and exits 0
    finally:
        sys.argv = saved
    check_training_script(args)
    check_config_file(args)
    args.quiet = False  # accelerate's --quiet turns every failure into exit 1; nothing is printed here anyway
    with _stop_workers_on_ctrl_c(args.training_script), _quiet_torchrun():
        try:
            upstream.get(upstream.ACCELERATE_LAUNCH_COMMAND)(args)
        except subprocess.CalledProcessError as err:  # one worker (simple launcher): it printed its line
            return _exit_code(0, err.returncode)
        except SystemExit as err:  # accelerate's own exits: Ctrl-C before a worker ran, SIGTERM, --debug
            if err.code == 130:
                raise RunInterrupted(_BEFORE_WORKERS) from err
            return err.code if isinstance(err.code, int) else 1
        except KeyboardInterrupt as err:
            raise RunInterrupted(_BEFORE_WORKERS) from err
        except ChildFailedError as err:  # torchrun (several workers): the first to fail says why
            failures = err.failures
            first = min(failures, key=lambda rank: failures[rank].timestamp)
            return _exit_code(first, failures[first].exitcode)
        except (ImportError, OSError, ValueError, RuntimeError) as err:  # the launcher's own, before a worker
            raise DpoHubError(f"accelerate launch could not start: {type(err).__name__}: {err}") from err
    return 0


def _exit_code(rank: int, code: int) -> int:
    """The worker's exit code; a worker ended by a signal (negative code) had no chance to say why."""
    if code >= 0:
        return code
    name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
    hint = " (out of memory? the kernel log says: dmesg)" if -code == signal.SIGKILL else ""
    raise WorkerDied(f"the training process of rank {rank} was killed by {name}{hint}", 128 - code)


def check_training_script(args: argparse.Namespace) -> None:
    """The ``-m`` module or the script exists, as the worker's ``python`` will look for it (the current
    folder first); a close ``dpo_hub.recipes`` name is suggested."""
    if args.no_python:
        return
    script = args.training_script
    if not args.module:
        if not Path(script).is_file():
            raise RecipeError(
                f"dpo-hub launch: no script {script!r}; a recipe runs as a module: -m dpo_hub.recipes.NAME "
                "(dpo-hub recipes lists them)"
            )
        return
    sys.path.insert(0, os.getcwd())  # python -m puts the current folder first
    try:
        found = importlib.util.find_spec(script) is not None
    except (ImportError, ValueError):  # a parent package that does not exist, or an empty name
        found = False
    finally:
        sys.path.remove(os.getcwd())
    if not found:
        close = difflib.get_close_matches(script, _recipe_modules(), n=1, cutoff=0.6)
        hint = f"did you mean -m {close[0]}? " if close else ""
        raise RecipeError(
            f"dpo-hub launch: no module named {script!r}; {hint}dpo-hub recipes lists the installed recipes"
        )


def _recipe_modules() -> list[str]:
    from dpo_hub.recipes import installed_recipes

    return [recipe.module for recipe in installed_recipes()]


def check_config_file(args: argparse.Namespace) -> None:
    """accelerate's own validation of the command line and its config file (the given one, else accelerate's
    default), on a copy: a missing or malformed file is one line naming it."""
    default = upstream.get(upstream.ACCELERATE_DEFAULT_CONFIG)
    config = args.config_file or (default if os.path.isfile(default) and not args.cpu else None)
    if args.config_file and not os.path.isfile(args.config_file):
        folder = Path(args.config_file).parent
        near = difflib.get_close_matches(
            Path(args.config_file).name, [p.name for p in folder.glob("*.y*ml")] if folder.is_dir() else []
        )
        hint = f"did you mean {folder / near[0]}? " if near else ""
        raise RecipeError(
            f"--config_file {args.config_file}: no such file; {hint}the shipped configs are in "
            "accelerate_configs/ (accelerate_configs/README.md)"
        )
    if config:
        _check_settings_file(config)
    quiet = logging.getLogger(upstream.ACCELERATE_VALIDATE_LAUNCH.module)  # its "defaults used" note
    level, quiet.level = quiet.level, logging.ERROR
    try:
        upstream.get(upstream.ACCELERATE_VALIDATE_LAUNCH)(copy.deepcopy(args))
    except Exception as err:
        what = f"--config_file {config} with these arguments" if config else "these arguments"
        reason = " ".join(str(err).split()) or type(err).__name__
        raise RecipeError(
            f"accelerate launch refuses {what}: {reason}; compare with the shipped configs in "
            "accelerate_configs/ (accelerate_configs/README.md)"
        ) from err
    finally:
        quiet.setLevel(level)


def _check_settings_file(path: str) -> None:
    """The config file is a YAML (or JSON) mapping: accelerate would fail on anything else with an
    ``AttributeError`` that names neither the file nor the problem."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
        settings = yaml.safe_load(text)  # JSON is YAML too
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"--config_file {path}: cannot be read: {err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(
            f"--config_file {path}: not valid YAML{where}: {problem}; compare with the shipped configs in "
            "accelerate_configs/"
        ) from err
    if not isinstance(settings, dict):
        got = "nothing" if settings is None else f"a {type(settings).__name__}"
        raise RecipeError(
            f"--config_file {path}: holds {got}, not accelerate settings (key: value lines such as "
            "distributed_type: 'NO'); compare with the shipped configs in accelerate_configs/"
        )


@contextlib.contextmanager
def _stop_workers_on_ctrl_c(training_script: str) -> Iterator[None]:
    """While the launch runs, Ctrl-C asks each worker to stop instead of raising ``KeyboardInterrupt`` here
    (on which accelerate would kill the worker 5 s later, torchrun 30 s later, saved or not).

    A worker in this process group got the terminal's SIGINT itself: it is sent SIGTERM, which starts a
    stop if it had none and is ignored by a stopping worker (a forwarded SIGINT would count as a second
    Ctrl-C). A torchrun worker runs in its own session, out of the terminal's reach: it is sent SIGINT.
    Before any worker runs there is nothing to save: Ctrl-C interrupts at once.
    """
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    import psutil

    me = psutil.Process()

    def workers() -> list[Any]:
        found = []
        for child in me.children():
            with contextlib.suppress(psutil.Error):
                if training_script in child.cmdline():
                    found.append(child)
        return found

    def handler(signum: int, frame: object) -> None:
        running = workers()
        if not running:
            raise KeyboardInterrupt
        for worker in running:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                same_group = os.getpgid(worker.pid) == os.getpgrp()
                worker.send_signal(signal.SIGTERM if same_group else signal.SIGINT)

    previous = signal.signal(signal.SIGINT, handler)
    handled = os.environ.get(_TORCHRUN_SIGNALS)
    os.environ[_TORCHRUN_SIGNALS] = "SIGTERM,SIGHUP,SIGQUIT"  # torchrun's agent leaves SIGINT to the handler
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if handled is None:
            os.environ.pop(_TORCHRUN_SIGNALS, None)
        else:
            os.environ[_TORCHRUN_SIGNALS] = handled


_TORCHRUN_SIGNALS = "TORCHELASTIC_SIGNALS_TO_HANDLE"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _quiet_torchrun() -> Iterator[None]:
    """torchrun's agent logs each failed or stopped worker (exit codes, closing signals): the worker's own
    line says what happened, so those logs are silenced for the launch."""
    import torch.distributed.run  # noqa: F401  (creates the agent's loggers, as accelerate's import would)

    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("torch.distributed.elastic")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_launch(argv: Sequence[str], debug: bool = False) -> int:
    """``dpo-hub launch ARGV``: the exit code; a launch that cannot start is one ``error: ...`` line."""
    try:
        return launch(argv)
    except DpoHubError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        if isinstance(err, WorkerDied):
            return err.code
        return 2 if isinstance(err, RecipeError) else 130 if isinstance(err, RunInterrupted) else 1
