"""Publish a run's LoRA adapter to the Hub in one commit, and pull it back onto its base model.

The pushed repo is an ordinary PEFT repo (``AutoPeftModelForCausalLM.from_pretrained`` loads it); the
model card is ours (``dpo_hub.card``), uploaded in the same commit as the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpo_hub.card import base_model_id, build_card
from dpo_hub.outputs import COMPLETE_MARKER
from dpo_hub.sources import SourceUnavailableError, load_model, load_tokenizer

PUBLISHED = ("adapter_model.safetensors", "adapter_config.json", "recipe.yaml", "metrics.json", "loss.png",
             "generations.md", "comparison.json", "comparison.md", "comparison.png", "tokenizer.json",
             "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.yaml", "*.md", "*.png", "*.jinja", "*.model"]


class HubError(RuntimeError):
    """A push or pull that cannot proceed; the message says why and what to do."""


def push_adapter(output_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                 token: str | None = None, license: str | None = None) -> str:
    """Publish the finished run in ``output_dir`` to ``repo_id`` in ONE commit; return the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    output_dir = Path(output_dir)
    for required in (COMPLETE_MARKER, "adapter_model.safetensors", "adapter_config.json", "recipe.yaml"):
        if not (output_dir / required).is_file():
            raise HubError(f"{output_dir} is not a finished dpo_hub run: {required} is missing. Train it first.")
    card = build_card(output_dir, repo_id, license=license)
    operations = [CommitOperationAdd(name, str(output_dir / name)) for name in PUBLISHED if (output_dir / name).is_file()]
    operations.append(CommitOperationAdd("README.md", str(card).encode("utf-8")))
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
    metrics = json.loads((output_dir / COMPLETE_MARKER).read_text())
    info = api.create_commit(
        repo_url.repo_id, operations, revision=revision,
        commit_message=f"dpo_hub: {metrics.get('recipe', 'run')} ({metrics.get('fingerprint', '')})",
        commit_description=f"LoRA adapter trained by dpo_hub from {base_model_id(metrics.get('model', ''))}.",
    )
    return info.commit_url


def download_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Snapshot of the adapter repo (safe file types only); refuses pickle-only weights."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
    if "adapter_model.safetensors" not in files:
        pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        why = f"only pickle weights ({', '.join(pickled)}), which dpo_hub refuses to load" if pickled else "no adapter"
        raise HubError(f"{repo_id}: {why}; publish adapter_model.safetensors (dpo-hub push does).")
    return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=SAFE_PATTERNS))


def pull_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> tuple[Any, Any]:
    """Download ``repo_id``, load its base model, attach the adapter; return (model, tokenizer) in eval mode."""
    return load_adapter(download_adapter(repo_id, revision, token), repo_id, token)


def load_adapter(folder: Path, repo_id: str, token: str | None = None) -> tuple[Any, Any]:
    """The downloaded adapter in ``folder`` on the base model its config names; (model, tokenizer)."""
    from huggingface_hub import ModelCard
    from peft import PeftModel

    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    if (folder / "README.md").exists():
        carded = ModelCard.load(folder / "README.md").data.base_model
        if carded and carded != base:
            raise HubError(f"{repo_id}: the card's base_model {carded!r} does not match adapter_config.json's {base!r}")
    try:
        base_model = load_model(base, token=token)
    except SourceUnavailableError as err:
        raise HubError(f"{repo_id}: base model {base!r} named by the adapter could not be loaded: {err}") from err
    model = PeftModel.from_pretrained(base_model, folder, is_trainable=False)
    return model.eval(), load_tokenizer(str(folder))


def pull_cli(repo_id: str, revision: str | None, prompts: list[str] | None) -> None:
    """``dpo-hub pull``: load the adapter and show base vs tuned answers."""
    from dpo_hub.compare import format_side_by_side, side_by_side
    from dpo_hub.recipe import Generation

    model, tokenizer = pull_adapter(repo_id, revision)
    print(f"loaded {repo_id}@{revision or 'main'} onto {model.peft_config['default'].base_model_name_or_path}")
    settings = Generation(prompts=tuple(prompts)) if prompts else Generation()
    print(format_side_by_side(side_by_side(model, tokenizer, settings)))
