"""Publish a run's LoRA adapter to the Hub in one commit, and download one (files only).

The pushed repo is an ordinary PEFT repo (``AutoPeftModelForCausalLM.from_pretrained`` loads it); the
model card is ours (``dpo_hub.hub.card``), uploaded in the same commit as the weights. Loading what was
downloaded onto its base model is ``dpo_hub.hub.runs.pull_adapter``.

Every Hub failure becomes one ``HubError`` naming the repo (and revision) and what to do; the token
never appears in a message. A push checks its target first (``check_push_target``: id, token, write
access, reachability), skips the commit when the target already holds exactly these files, and retries
the commit with exponential backoff on connection errors, timeouts and HTTP 5xx.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_hub.artifacts.folders import COMPLETE_MARKER, sha256
from dpo_hub.config.values import check_repo_id
from dpo_hub.errors import HubError
from dpo_hub.hub.card import build_card
from dpo_hub.hub.errors import (
    LOGIN_HINT,
    PUSH_ATTEMPTS,
    PUSH_BASE_DELAY,
    hub_errors,
    repo_label,
    with_retries,
)
from dpo_hub.sources.models import is_local

PUBLISHED = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "recipe.yaml",
    "metrics.json",
    "loss.png",
    "generations.md",
    "comparison.json",
    "comparison.md",
    "comparison.png",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "chat_template.jinja",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.yaml", "*.md", "*.png", "*.jinja", "*.model"]
log = logging.getLogger("dpo_hub")


def check_push_target(repo_id: str, token: str | None = None) -> str:
    """Fail fast, creating nothing, unless ``repo_id`` can be pushed to; return it as ``namespace/name``.

    Checks the id's syntax, that a token is available (``token``, ``HF_TOKEN`` or ``hf auth login``),
    that the Hub answers and accepts the token (``whoami``), and that the token may write to the repo's
    namespace (its user, its orgs, or a fine-grained token's ``repo.write`` scopes).
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id, error=HubError)
    token = _require_token(repo_id, token)
    with hub_errors(repo_id, token=token, action="check the push target"):
        return _writable_repo_id(HfApi(token=token).whoami(), repo_id)


class Pushed(str):
    """A push's URL (the new commit's, or the head's when nothing changed) that says whether it committed."""

    changed: bool = True


def push_adapter(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    license: str | None = None,
    attempts: int = PUSH_ATTEMPTS,
    base_delay: float = PUSH_BASE_DELAY,
    base: str | None = None,
    force: bool = False,
) -> Pushed:
    """Publish the finished run in ``output_dir`` to ``repo_id`` in ONE commit; return the commit URL.

    An adapter whose base model is a local path is refused unless ``base`` names the Hub repo of that model
    (then recorded in the pushed ``adapter_config.json`` and card); a repo already holding an adapter of
    another base is not replaced unless ``force``. Nothing is committed when ``revision`` already holds
    exactly these files (the head commit's URL is returned, ``.changed`` False). Connection errors, timeouts
    and HTTP 5xx are retried ``attempts`` times in all, waiting ``base_delay`` seconds, then twice as long
    each time; until a commit lands the repo keeps its head.
    """
    output_dir = Path(output_dir)
    _require_finished(output_dir)
    metrics = json.loads((output_dir / COMPLETE_MARKER).read_text())
    base = _published_base(output_dir, base)
    return push_files(
        lambda repo: _files_to_publish(output_dir, repo, license, base),
        repo_id,
        private,
        revision,
        token,
        message=f"dpo_hub: {metrics.get('recipe', 'run')} ({metrics.get('fingerprint', '')})",
        description=f"LoRA adapter trained by dpo_hub from {base}.",
        attempts=attempts,
        base_delay=base_delay,
        force=force,
    )


def _published_base(output_dir: Path, base: str | None) -> str:
    """The base model id others will load the adapter onto: the adapter's own, or ``base`` for a local one."""
    recorded = json.loads((output_dir / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    if base is not None:
        check_repo_id(base, key="--base", error=HubError)
        return base
    if not recorded or is_local(recorded) or recorded.startswith(("/", "./", "../", "~")):
        raise HubError(
            f"{output_dir}: the adapter's base model is {recorded or 'not recorded'!r}, a local path others "
            "cannot load it from; pass --base REPO_ID (base=...) naming that model on the Hub, which is then "
            "recorded in the pushed adapter_config.json and card. Nothing was pushed."
        )
    return recorded


def push_files(
    files_for: Callable[[str], dict[str, bytes | Path]],
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    message: str = "dpo_hub",
    description: str = "",
    attempts: int = PUSH_ATTEMPTS,
    base_delay: float = PUSH_BASE_DELAY,
    force: bool = False,
) -> Pushed:
    """The push machinery of ``push_adapter`` for any files: ``files_for(namespace/name)`` gives repo path ->
    content (bytes, or a local file's path); one commit, skipped when unchanged, retried when transient;
    an adapter of another base already in the repo is replaced only with ``force``."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id, error=HubError)
    token = _require_token(repo_id, token)
    what = f"push to {repo_label(repo_id, revision)}"
    with hub_errors(repo_id, revision, token, "push to", attempts=attempts):
        repo_id = with_retries(
            lambda: _writable_repo_id(HfApi(token=token).whoami(), repo_id), what, attempts, base_delay
        )
        files = files_for(repo_id)
        return with_retries(
            lambda: _push_once(files, repo_id, private, revision, token, message, description, force),
            what,
            attempts,
            base_delay,
        )


def download_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Snapshot of the adapter repo at one commit (safe file types only); refuses pickle-only weights."""
    from huggingface_hub import HfApi, snapshot_download

    check_repo_id(repo_id, error=HubError)
    with hub_errors(repo_id, revision, token, "download"):
        info = HfApi(token=token).model_info(repo_id, revision=revision)
        _require_adapter(repo_label(repo_id, revision), [s.rfilename for s in info.siblings or []])
        return Path(snapshot_download(repo_id, revision=info.sha, token=token, allow_patterns=SAFE_PATTERNS))


# -- one push -------------------------------------------------------------------------------------
def _push_once(
    files: dict[str, bytes | Path],
    repo_id: str,
    private: bool,
    revision: str | None,
    token: str,
    message: str,
    description: str,
    force: bool = False,
) -> Pushed:
    """One attempt: nothing if the target already holds ``files``, else create repo/branch and commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    head = _head_if_unchanged(api, repo_id, revision, files)
    if head is not None:
        log.info("%s already holds this run at %s; nothing to push", repo_label(repo_id, revision), head[:12])
        unchanged = Pushed(f"{api.endpoint}/{repo_id}/commit/{head}")
        unchanged.changed = False
        return unchanged
    if "adapter_config.json" in files and not force:
        _refuse_other_base(api, repo_id, revision, files["adapter_config.json"])
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path, data) for path, data in files.items()]
    info = api.create_commit(
        repo_id, operations, revision=revision, commit_message=message, commit_description=description
    )
    return Pushed(info.commit_url)


def _refuse_other_base(api: Any, repo_id: str, revision: str | None, config: bytes | Path) -> None:
    """Refuse replacing an adapter of another base model (peft would load the new weights onto the wrong
    model for anyone pinned to the repo); a repo without an adapter config is no conflict."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "adapter_config.json", revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return
    theirs = json.loads(Path(path).read_text()).get("base_model_name_or_path")
    mine = json.loads(config.read_bytes() if isinstance(config, Path) else config).get(
        "base_model_name_or_path"
    )
    if theirs and theirs != mine:
        raise HubError(
            f"{repo_label(repo_id, revision)} holds an adapter of base model {theirs!r} and this one is of "
            f"{mine!r}: replacing it would break whoever loads the repo onto {theirs!r}. Push to another "
            "repo or revision, or pass --force (force=True) to replace it. Nothing was pushed."
        )


def _head_if_unchanged(
    api: Any, repo_id: str, revision: str | None, files: dict[str, bytes | Path]
) -> str | None:
    """The head commit of ``revision`` if it holds every file of ``files`` byte for byte, else None."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils.sha import git_hash

    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    remote = {s.rfilename: s for s in info.siblings or []}
    for path, data in files.items():
        entry = remote.get(path)
        if entry is None:
            return None
        if entry.lfs is not None:
            same = entry.lfs.sha256 == sha256(data)
        else:
            same = entry.blob_id == git_hash(data.read_bytes() if isinstance(data, Path) else data)
        if not same:
            return None
    return info.sha


def _files_to_publish(output_dir: Path, repo_id: str, license: str | None, base: str) -> dict[str, bytes]:
    """Repo path -> content: the published run files (the adapter config naming ``base``) and the card built
    for ``repo_id``."""
    files = {name: (output_dir / name).read_bytes() for name in PUBLISHED if (output_dir / name).is_file()}
    config = json.loads(files["adapter_config.json"])
    if config.get("base_model_name_or_path") != base:  # --base for a local one: the local file stays as it is
        files["adapter_config.json"] = (
            json.dumps({**config, "base_model_name_or_path": base}, indent=2) + "\n"
        ).encode()
    files["README.md"] = str(build_card(output_dir, repo_id, license=license, base=base)).encode("utf-8")
    return files


def _require_finished(output_dir: Path) -> None:
    for required in (COMPLETE_MARKER, "adapter_model.safetensors", "adapter_config.json", "recipe.yaml"):
        if not (output_dir / required).is_file():
            raise HubError(
                f"{output_dir} is not a finished dpo_hub run: {required} is missing. Train it first."
            )


def _require_adapter(label: str, files: list[str]) -> None:
    """A downloadable adapter has safetensors weights and an adapter config."""
    if "adapter_model.safetensors" in files and "adapter_config.json" in files:
        return
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickled:
        why = f"only pickle weights ({', '.join(pickled)}), which dpo_hub refuses to load"
    elif "adapter_model.safetensors" in files:
        why = "adapter_model.safetensors but no adapter_config.json"
    else:
        why = "no adapter (adapter_model.safetensors and adapter_config.json)"
    raise HubError(f"{label}: {why}; publish a LoRA adapter with safetensors weights (dpo-hub push does).")


# -- checks before any write ---------------------------------------------------------------------
def _require_token(repo_id: str, token: str | None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` or the ``hf auth login`` store."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(f"cannot push to {repo_id}: no Hugging Face token; {LOGIN_HINT} with a write token.")
    return token


def _writable_repo_id(me: dict[str, Any], repo_id: str) -> str:
    """``namespace/name`` if the token ``whoami`` describes may write there; else a HubError saying why."""
    user = me.get("name", "?")
    namespace, _, name = repo_id.rpartition("/")
    namespace = namespace or user
    access = (me.get("auth") or {}).get("accessToken") or {}
    if access.get("role") == "read":
        raise HubError(
            f"cannot push to {repo_id}: the token of {user!r} is read-only; {LOGIN_HINT} with a "
            "token that has write access."
        )
    writable = _writable_namespaces(me, access)
    if namespace not in writable:
        raise HubError(
            f"cannot push to {repo_id}: the token of {user!r} cannot write to namespace {namespace!r} "
            f"(it can write to {', '.join(sorted(writable)) or 'nothing'}); push to one of those, e.g. "
            f"{user}/{name}, or use a token with write access to {namespace!r}."
        )
    return f"{namespace}/{name}"


def _writable_namespaces(me: dict[str, Any], access: dict[str, Any]) -> set[str]:
    """The user and the orgs it may write to; for fine-grained tokens, the entities with ``repo.write``."""
    if access.get("role") == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        return {s["entity"]["name"] for s in scoped if "repo.write" in s.get("permissions", [])}
    orgs = {o["name"] for o in me.get("orgs", []) if o.get("roleInOrg", "write") not in ("read", "reader")}
    return {me.get("name", ""), *orgs}


# -- error translation ---------------------------------------------------------------------------
