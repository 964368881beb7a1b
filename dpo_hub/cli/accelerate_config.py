"""Recipe-side settings an accelerate config asks for, from its ``# dpo_hub: {key: value}`` lines.

accelerate's loader rejects unknown keys, so the settings live in a comment. ``accelerate launch``
exports no variable naming its config file, so the file is found from the launching process's
command line (``accelerate launch`` or ``dpo-hub launch``; or ``$DPO_HUB_ACCELERATE_CONFIG`` for launchers
whose workers it does not start).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from dpo_hub import upstream
from dpo_hub.training.topology import LaunchRequest

_DIRECTIVE = re.compile(r"^\s*#\s*dpo_hub\s*:(.*)$")


def recipe_settings_from_accelerate_config(path: str | Path) -> dict[str, str]:
    """Overrides named by the file's ``# dpo_hub:`` lines, as strings for ``Recipe.override``."""
    settings: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        match = _DIRECTIVE.match(line)
        body = match.group(1).strip() if match else ""
        if not body:
            continue
        try:
            values = yaml.safe_load(body if body.startswith("{") else "{" + body + "}")
        except yaml.YAMLError:
            values = None
        if not isinstance(values, dict):
            raise ValueError(
                f"{path}:{number}: a '# dpo_hub:' line needs a mapping such as {{dpo.precision: bf16}}; "
                f"got {body!r}"
            )
        settings.update({str(key): _as_text(value) for key, value in values.items()})
    return settings


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def accelerate_config_path() -> str | None:
    """``$DPO_HUB_ACCELERATE_CONFIG``, else the config of the ``accelerate launch`` this process descends
    from."""
    if os.environ.get("DPO_HUB_ACCELERATE_CONFIG"):
        return os.environ["DPO_HUB_ACCELERATE_CONFIG"]
    launch = _launching_command()
    return _config_file(*launch) if launch else None


def launch_request() -> LaunchRequest | None:
    """What the ``accelerate launch`` this process descends from asks for, read by accelerate's own
    validation (config file + flags); ``None`` when not started by ``accelerate launch``."""
    launch = _launching_command()
    if launch is None:
        return None
    launch_args, cwd = launch
    try:
        args = upstream.get(upstream.ACCELERATE_LAUNCH_PARSER)().parse_args(launch_args)
        if args.config_file:
            args.config_file = os.path.join(cwd, args.config_file)
        quiet = logging.getLogger(upstream.ACCELERATE_VALIDATE_LAUNCH.module)  # its "defaults used" note
        level, quiet.level = quiet.level, logging.ERROR
        try:
            args, _, _ = upstream.get(upstream.ACCELERATE_VALIDATE_LAUNCH)(args)
        finally:
            quiet.setLevel(level)
    except (SystemExit, Exception):  # a command accelerate itself refused would not have started us
        return None
    cpu = bool(args.cpu or getattr(args, "use_cpu", False))
    fsdp, deepspeed = bool(args.use_fsdp), bool(args.use_deepspeed)
    explicit_gpus = args.gpu_ids not in (None, "all") or args.multi_gpu or fsdp or deepspeed
    script = args.training_script
    flags = launch_args[: launch_args.index(script)] if script in launch_args else []
    command = " ".join(["accelerate launch", *[f for f in flags if f not in ("-m", "--module")]])
    return LaunchRequest(
        command=command.strip(),
        processes=int(args.num_processes or 1),
        machines=int(args.num_machines or 1),
        cpu=cpu,
        gpus=bool(explicit_gpus) and not cpu,
        fsdp=fsdp,
        deepspeed=deepspeed,
        fsdp_version=int(getattr(args, "fsdp_version", None) or 2),
        zero_stage=int(args.zero_stage) if deepspeed and getattr(args, "zero_stage", None) else None,
    )


def _launching_command() -> tuple[list[str], str] | None:
    """The arguments after ``accelerate launch`` of the process this one descends from, and its cwd."""
    try:
        import psutil

        process = psutil.Process().parent()
        for _ in range(4):
            if process is None:
                return None
            launch_args = _launch_args(process.cmdline())
            if launch_args is not None:
                return launch_args, process.cwd()
            process = process.parent()
    except Exception:  # psutil errors, permissions, exotic launchers: no settings, never a crash
        return None
    return None


def _launch_args(argv: list[str]) -> list[str] | None:
    for i, token in enumerate(argv):
        name = os.path.basename(token)
        if name == "accelerate" and argv[i + 1 : i + 2] == ["launch"]:
            return argv[i + 2 :]
        if name in ("dpo-hub", "dpo_hub") and "launch" in argv[i + 1 : i + 3]:  # dpo-hub [--debug] launch
            return argv[argv.index("launch", i + 1) + 1 :]
        if name == "accelerate-launch" or token == "accelerate.commands.launch":
            return argv[i + 1 :]
    return None


def _config_file(launch_args: list[str], cwd: str) -> str | None:
    default_config_file = upstream.get(upstream.ACCELERATE_DEFAULT_CONFIG)
    try:
        config_file = upstream.get(upstream.ACCELERATE_LAUNCH_PARSER)().parse_args(launch_args).config_file
    except SystemExit:
        return None
    if config_file is None:
        return default_config_file if os.path.isfile(default_config_file) else None
    return os.path.join(cwd, config_file)
