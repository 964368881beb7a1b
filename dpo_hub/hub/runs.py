"""A finished run, from its output folder or from the Hub repo it was pushed to.

``open_run`` gives back the adapter on its base model (one model: tuned with the adapter on, base with
it off), the tokenizer, the run's recipe and so its eval split; ``pull_adapter`` and ``compare_run``
are built on it. The loading itself is ``sources.load_adapter_model``, the one base + adapter loader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_hub.compare.base_vs_tuned import compare_model
from dpo_hub.compare.report import Comparison, write_outputs
from dpo_hub.config.presets import Generation
from dpo_hub.data.adapters import Preferences, prompt_formatter
from dpo_hub.data.mixing import prepare_data
from dpo_hub.errors import DataError, DpoHubError, HubError, OutputExistsError, SourceUnavailableError
from dpo_hub.hub.transfer import download_adapter
from dpo_hub.recipe import Recipe
from dpo_hub.sources.models import load_adapter_model, load_tokenizer


@dataclass
class Run:
    """A trained adapter loaded back: ``model`` is tuned (adapter on) and base (``adapter_off``) at once."""

    source: str  # the folder, or ``repo_id[@revision]``
    folder: Path  # the run folder, or the downloaded snapshot of the repo
    model: Any
    tokenizer: Any
    recipe: Recipe | None  # None for an adapter that was not trained by dpo_hub

    def eval_pairs(self) -> Any:
        """The run's held-out split, rebuilt from its recipe (the same rows, split and seed)."""
        if self.recipe is None:
            raise DataError(
                f"{self.source}: no recipe.yaml, so no eval split to rebuild; pass pairs (--pairs FILE)"
            )
        try:
            return prepare_data(self.recipe.data, self.tokenizer, max_length=self.recipe.dpo.max_length).eval
        except Exception as err:
            raise DataError(
                f"{self.source}: cannot rebuild the run's eval split from {self.recipe.data.dataset} "
                f"({err}); pass pairs (--pairs FILE)"
            ) from err


def open_run(source: str | Path, revision: str | None = None, token: str | None = None) -> Run:
    """A run folder, or else a Hub repo id (at ``revision``), its adapter loaded onto the base model it
    names."""
    if Path(source).is_dir():
        if not (Path(source) / "adapter_config.json").is_file():
            raise SourceUnavailableError(
                f"{source}: no adapter_config.json; not a finished dpo_hub run folder"
            )
        return _load(Path(source), str(source), token, SourceUnavailableError)
    return open_repo(str(source), revision, token)


def open_repo(repo_id: str, revision: str | None = None, token: str | None = None) -> Run:
    """A pushed run: one download (adapter, tokenizer, recipe), then the adapter on its base model."""
    label = f"{repo_id}@{revision}" if revision else repo_id
    return _load(download_adapter(repo_id, revision, token), label, token, HubError)


def _load(folder: Path, label: str, token: str | None, error: type[DpoHubError]) -> Run:
    """The adapter in ``folder`` on its base model; ``error`` is raised for a broken adapter."""
    recipe = Recipe.from_yaml(folder / "recipe.yaml") if (folder / "recipe.yaml").is_file() else None
    base = _base_model(folder, label, error)
    _check_weights(folder, label, error)
    try:
        model = load_adapter_model(folder, recipe.model if recipe else base, token=token)
    except SourceUnavailableError as err:  # its cause, not its advice: --model belongs to training
        raise error(
            f"{label}: base model {base!r} named by the adapter could not be loaded "
            f"({first_line(err.__cause__ or err)}); check that it exists and is reachable (network, "
            "HF_HUB_OFFLINE, a token for a private or gated model)"
        ) from err
    except (RuntimeError, ValueError, KeyError) as err:
        raise error(
            f"{label}: the adapter does not fit its base model {base!r} ({first_line(err)}); "
            "push a run trained on that base."
        ) from err
    tokenizer = load_tokenizer(str(folder) if (folder / "tokenizer_config.json").is_file() else base)
    return Run(label, folder, model, tokenizer, recipe)


def _base_model(folder: Path, label: str, error: type[DpoHubError] = HubError) -> str:
    """The base model the adapter config names; a card that names another one is an error."""
    try:
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (ValueError, KeyError, TypeError) as err:
        raise error(
            f"{label}: adapter_config.json is not a PEFT adapter config naming its base model "
            f"({type(err).__name__}: {first_line(err)}); push the run again."
        ) from err
    if (folder / "README.md").is_file():
        from huggingface_hub import ModelCard

        carded = ModelCard.load(folder / "README.md").data.base_model
        if carded and carded != base:
            raise error(
                f"{label}: the card's base_model {carded!r} does not match adapter_config.json's {base!r}; "
                "fix the card or push the run again."
            )
    return base


def _check_weights(folder: Path, label: str, error: type[DpoHubError]) -> None:
    """Read every tensor of adapter_model.safetensors, so a corrupt or truncated file fails by name."""
    from safetensors.torch import load_file

    try:
        load_file(folder / "adapter_model.safetensors")
    except (
        Exception
    ) as err:  # safetensors raises its own error types, OSError or ValueError for a broken file
        raise error(
            f"{label}: adapter_model.safetensors cannot be read ({type(err).__name__}: {first_line(err)}); "
            "the file is corrupt or incomplete: push the run again."
        ) from err


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pairs_file(path: str, recipe: Recipe | None, columns: dict[str, str] | None = None) -> Preferences:
    """A pairs file read as the run's training data was formatted (chat template or separator), columns
    mapped."""
    fmt = (
        {k: getattr(recipe.data, k) for k in ("format", "separator") if hasattr(recipe.data, k)}
        if recipe
        else {}
    )
    try:
        return Preferences(dataset=path, limit=None, eval_fraction=0.0, **fmt, **(columns or {}))
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: {err}") from err


def pull_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> tuple[Any, Any]:
    """Download ``repo_id``, load its base model, attach the adapter; return (model, tokenizer) in eval
    mode."""
    run = open_repo(repo_id, revision, token)
    return run.model, run.tokenizer


def compare_run(
    source: str | Path | Run,
    prompts: Iterable[str] | None = None,
    pairs: Any = None,
    judge: str | None = None,
    output_dir: str | Path | None = None,
    revision: str | None = None,
    batch_size: int = 16,
    generation: Generation | None = None,
    overwrite: bool = False,
    max_length: int | None = None,
    columns: dict[str, str] | None = None,
) -> Comparison:
    """Compare base and tuned for a run folder, a Hub repo id, or an opened ``Run``.

    The run's recipe gives the default ``pairs`` (its eval split), ``generation`` settings, beta,
    max_length for its eval split (other pairs are scored whole, up to the model's context length;
    ``max_length`` overrides both) and the prompt format (chat template or separator), used
    for prompts and a pairs file alike; ``columns`` maps a pairs file's columns (``prompt_column``,
    ``chosen_column``, ``rejected_column``). With ``output_dir``, comparison.json/.md/.png are written there
    (a folder that already holds a comparison is refused, before any work, unless ``overwrite``;
    ``comparison_dir`` gives a fresh one).
    """
    if output_dir is not None and (Path(output_dir) / "comparison.json").exists() and not overwrite:
        raise OutputExistsError(
            f"{output_dir} already holds a comparison (comparison.json); nothing was changed. "
            "Choose another output folder (--output) or pass --overwrite to replace it."
        )
    run = source if isinstance(source, Run) else open_run(source, revision)
    recipe, label = run.recipe, None
    if pairs is None and recipe is not None:
        pairs, label = run.eval_pairs(), f"the run's eval split of {recipe.data.dataset}"
    elif isinstance(pairs, (str, Path)):
        pairs = pairs_file(str(pairs), recipe, columns)
    prompt_text = prompt_formatter(recipe.data, run.tokenizer) if recipe else None
    comparison = compare_model(
        run.model,
        run.tokenizer,
        pairs,
        prompts,
        generation or (recipe.generation if recipe else None),
        judge,
        beta=recipe.dpo.beta if recipe else 0.1,
        max_length=max_length or (recipe.dpo.max_length if recipe and label else None),  # other pairs: whole
        batch_size=batch_size,
        source=run.source,
        prompt_text=prompt_text,
    )
    comparison.settings["pairs"] = label or comparison.settings["pairs"]
    if output_dir is not None:
        write_outputs(comparison, Path(output_dir))
    return comparison


def comparison_dir(source: str | Path, pairs: str | None = None) -> Path:
    """A new folder for a comparison of ``source``: ``RUN_DIR/comparisons/TIME[-PAIRS]`` for a run folder (its
    own comparison files are kept), ``comparison-NAME`` in the current folder for a Hub repo."""
    if not Path(source).is_dir():
        return Path(f"comparison-{str(source).rstrip('/').split('/')[-1]}")
    name = time.strftime("%Y%m%d-%H%M%S") + (f"-{Path(pairs).stem}" if pairs else "")
    folder, n = Path(source) / "comparisons" / name, 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"{name}-{n}")
    return folder
