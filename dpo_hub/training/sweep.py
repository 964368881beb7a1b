"""Hyperparameter sweeps: one recipe, a grid of dotted-key values, every point trained one after another.

``sweep(recipe, {"dpo.beta": [0.05, 0.1], "lora.r": [4, 8]}, "sweeps/beta")`` trains each point into
``OUTPUT_DIR/FINGERPRINT`` (the point's recipe fingerprint) with ``dpo_hub.train``, in the processes it is
called from (``accelerate launch`` runs every point on all of them). A point whose folder is finished is
skipped; an interrupted one resumes from its checkpoints. ``sweep.json``, ``sweep.md`` and ``sweep.png``
put every point's settings, eval metrics and comparison numbers side by side.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpo_hub.artifacts import folders as outputs
from dpo_hub.artifacts.plots import sweep_figure
from dpo_hub.errors import RecipeError
from dpo_hub.recipe import Recipe
from dpo_hub.runtime import on_main, setup_logging, wants_cpu
from dpo_hub.training.run import train

log = logging.getLogger("dpo_hub")
COLUMNS = (  # (label, path in metrics.json)
    ("eval loss", ("eval_after", "eval_loss")),
    ("reward accuracy", ("eval_after", "eval_rewards/accuracies")),
    ("reward margin", ("eval_after", "eval_rewards/margins")),
    ("per-token acc. base", ("comparison", "accuracy", "per_token", "base", "value")),
    ("per-token acc. tuned", ("comparison", "accuracy", "per_token", "tuned", "value")),
    ("summed acc. tuned", ("comparison", "accuracy", "summed", "tuned", "value")),
    ("KL per token", ("comparison", "kl_per_token_chosen")),
)


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["dpo.beta=0.05,0.1", "lora.target_modules=[c_attn],[c_attn,c_fc]"]`` -> ``{key: [values]}``
    (commas inside brackets do not split)."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip().removeprefix("--")
        if not eq or not key or not values.strip():
            raise RecipeError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. --grid dpo.beta=0.05,0.1,0.2)")
        if key in grid:
            raise RecipeError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2")
        grid[key] = _split(values)
    return grid


def _split(values: str) -> list[str]:
    items, depth, current = [], 0, ""
    for char in values:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    return [v for v in [*items, current.strip()] if v]


def grid_points(recipe: Recipe, grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], Recipe]]:
    """Every combination of ``grid``'s values as (settings, recipe), all checked before any training."""
    if not grid:
        raise RecipeError("a sweep needs at least one --grid KEY=V1,V2,... (e.g. --grid dpo.beta=0.05,0.1)")
    keys = list(grid)
    points, seen = [], {}
    for values in itertools.product(*(list(grid[k]) for k in keys)):
        settings = dict(zip(keys, values))
        point = recipe.override(settings, source=f"--grid point {_label(settings)}")
        if point.fingerprint() in seen:
            raise RecipeError(
                f"--grid points {_label(seen[point.fingerprint()])} and {_label(settings)} are the same "
                "recipe; list each value once"
            )
        seen[point.fingerprint()] = settings
        points.append(({k: _value(point, k, v) for k, v in settings.items()}, point))
    return points


def sweep(recipe: Recipe, grid: Mapping[str, Sequence[Any]], output_dir: str | Path) -> Path:
    """Train every point of ``grid`` into ``output_dir/FINGERPRINT``; finished points are skipped. Returns the
    folder holding the points and ``sweep.json``/``sweep.md``/``sweep.png``."""
    from accelerate import PartialState

    state = PartialState(cpu=wants_cpu())
    setup_logging(state.is_main_process)
    output_dir = Path(output_dir).expanduser().resolve()
    points = grid_points(recipe, grid)
    outputs.check_writable(output_dir / points[0][1].fingerprint(), overwrite=True)
    log.info(
        "sweep: %d point(s) of %s into %s",
        len(points),
        " x ".join(f"{k} ({len(v)})" for k, v in grid.items()),
        output_dir,
    )
    rows = []
    for n, (settings, point) in enumerate(points, 1):
        folder = output_dir / point.fingerprint()
        finished = on_main(state, lambda f=folder: (f / outputs.COMPLETE_MARKER).is_file())
        if finished:
            log.info(
                "sweep: point %d/%d %s (%s) already finished in %s; skipped",
                n,
                len(points),
                point.fingerprint(),
                _label(settings),
                folder,
            )
        else:
            log.info("sweep: point %d/%d %s (%s)", n, len(points), point.fingerprint(), _label(settings))
            train(point.replace(overwrite_output_dir=False), folder)
        rows.append(
            {
                "point": point.fingerprint(),
                "folder": folder.name,
                "settings": settings,
                "status": "skipped (finished before)" if finished else "trained",
            }
        )
    if state.is_main_process:
        write_summary(output_dir, list(grid), rows)
        log.info("sweep: wrote %s", output_dir / "sweep.md")
    state.wait_for_everyone()
    return output_dir


def write_summary(output_dir: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """``sweep.json`` (each point's settings, eval before/after and comparison), ``sweep.md`` and
    ``sweep.png``."""
    for row in rows:
        metrics = json.loads(
            (output_dir / row["folder"] / outputs.COMPLETE_MARKER).read_text(encoding="utf-8")
        )
        row.update(
            eval_before=metrics.get("eval_before"),
            eval_after=metrics.get("eval_after"),
            comparison=metrics.get("comparison"),
            train_loss=metrics.get("train", {}).get("train_loss"),
            numbers={label: _dig(metrics, path) for label, path in COLUMNS},
        )
    outputs.write_json(output_dir / "sweep.json", {"grid": keys, "points": rows})
    header = ["point", *keys, *(label for label, _ in COLUMNS)]
    lines = [
        f"# Sweep: {len(rows)} point(s) over {', '.join(keys)}",
        "",
        "Eval metrics after training on each point's held-out pairs; comparison numbers: base vs tuned "
        "(`comparison` in each point's metrics.json).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [
            f"[`{row['point']}`]({row['folder']}/)",
            *(str(row["settings"][k]) for k in keys),
            *(_fmt(row["numbers"][label]) for label, _ in COLUMNS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![sweep](sweep.png)", ""]
    tmp = output_dir / "sweep.md.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, output_dir / "sweep.md")
    sweep_figure(
        [_label(r["settings"]) for r in rows],
        {
            label: [r["numbers"][label] for r in rows]
            for label in ("eval loss", "reward accuracy", "reward margin")
        },
        output_dir / "sweep.png",
    )


def _value(recipe: Recipe, key: str, given: Any) -> Any:
    """The typed value ``key`` has in ``recipe`` (``given`` for keys deeper than ``group.field``)."""
    owner, _, name = key.rpartition(".")
    part = getattr(recipe, owner, None) if owner else recipe
    value = getattr(part, name, given) if part is not None and "." not in owner else given
    return list(value) if isinstance(value, tuple) else value


def _dig(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())
