"""Publish a run's LoRA adapter to the Hub in one commit, and download one (files only).

The pushed repo is an ordinary PEFT repo (``AutoPeftModelForCausalLM.from_pretrained`` loads it); the
model card is ours (``dpo_hub.card``), uploaded in the same commit as the weights. Loading what was
downloaded onto its base model is ``dpo_hub.runs.pull_adapter``.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_hub.card import base_model_id, build_card
from dpo_hub.errors import HubError
from dpo_hub.outputs import COMPLETE_MARKER

PUBLISHED = ("adapter_model.safetensors", "adapter_config.json", "recipe.yaml", "metrics.json", "loss.png",
             "generations.md", "comparison.json", "comparison.md", "comparison.png", "tokenizer.json",
             "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.yaml", "*.md", "*.png", "*.jinja", "*.model"]


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
