"""Publish a run's LoRA adapter to the Hub in one commit, and download one (files only).

The pushed repo is an ordinary PEFT repo (``AutoPeftModelForCausalLM.from_pretrained`` loads it); the
model card is ours (``dpo_hub.card``), uploaded in the same commit as the weights. Loading what was
downloaded onto its base model is ``dpo_hub.runs.pull_adapter``.

Every Hub failure becomes one ``HubError`` naming the repo (and revision) and what to do; the token
never appears in a message. A push checks its target first (``check_push_target``: id, token, write
access, reachability), skips the commit when the target already holds exactly these files, and retries
the commit with exponential backoff on connection errors, timeouts and HTTP 5xx.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dpo_hub.card import base_model_id, build_card
from dpo_hub.errors import HubError
from dpo_hub.outputs import COMPLETE_MARKER

PUBLISHED = ("adapter_model.safetensors", "adapter_config.json", "recipe.yaml", "metrics.json", "loss.png",
             "generations.md", "comparison.json", "comparison.md", "comparison.png", "tokenizer.json",
             "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.yaml", "*.md", "*.png", "*.jinja", "*.model"]
PUSH_ATTEMPTS = 4  # one try and three retries ...
PUSH_BASE_DELAY = 1.0  # ... after 1, 2 and 4 seconds
LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"
log = logging.getLogger("dpo_hub")
T = TypeVar("T")


def check_push_target(repo_id: str, token: str | None = None) -> str:
    """Fail fast, creating nothing, unless ``repo_id`` can be pushed to; return it as ``namespace/name``.

    Checks the id's syntax, that a token is available (``token``, ``HF_TOKEN`` or ``hf auth login``),
    that the Hub answers and accepts the token (``whoami``), and that the token may write to the repo's
    namespace (its user, its orgs, or a fine-grained token's ``repo.write`` scopes).
    """
    from huggingface_hub import HfApi

    _validate_repo_id(repo_id)
    token = _require_token(repo_id, token)
    with hub_errors(repo_id, token=token, action="check the push target"):
        return _writable_repo_id(HfApi(token=token).whoami(), repo_id)


def push_adapter(output_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                 token: str | None = None, license: str | None = None, attempts: int = PUSH_ATTEMPTS,
                 base_delay: float = PUSH_BASE_DELAY) -> str:
    """Publish the finished run in ``output_dir`` to ``repo_id`` in ONE commit; return the commit URL.

    Nothing is committed when ``revision`` already holds exactly these files (the head commit's URL is
    returned). Connection errors, timeouts and HTTP 5xx are retried ``attempts`` times in all, waiting
    ``base_delay`` seconds, then twice as long each time; until a commit lands the repo keeps its head.
    """
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    _require_finished(output_dir)
    _validate_repo_id(repo_id)
    token = _require_token(repo_id, token)
    metrics = json.loads((output_dir / COMPLETE_MARKER).read_text())
    message = f"dpo_hub: {metrics.get('recipe', 'run')} ({metrics.get('fingerprint', '')})"
    description = f"LoRA adapter trained by dpo_hub from {base_model_id(metrics.get('model', ''))}."
    what = f"push to {_label(repo_id, revision)}"
    with hub_errors(repo_id, revision, token, "push to", attempts=attempts):
        repo_id = with_retries(lambda: _writable_repo_id(HfApi(token=token).whoami(), repo_id), what, attempts,
                               base_delay)
        files = _files_to_publish(output_dir, repo_id, license)
        return with_retries(lambda: _push_once(files, repo_id, private, revision, token, message, description),
                            what, attempts, base_delay)


def download_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Snapshot of the adapter repo at one commit (safe file types only); refuses pickle-only weights."""
    from huggingface_hub import HfApi, snapshot_download

    _validate_repo_id(repo_id)
    with hub_errors(repo_id, revision, token, "download"):
        info = HfApi(token=token).model_info(repo_id, revision=revision)
        _require_adapter(_label(repo_id, revision), [s.rfilename for s in info.siblings or []])
        return Path(snapshot_download(repo_id, revision=info.sha, token=token, allow_patterns=SAFE_PATTERNS))


def with_retries(action: Callable[[], T], what: str, attempts: int = PUSH_ATTEMPTS,
                 base_delay: float = PUSH_BASE_DELAY) -> T:
    """``action()``, retried on transient Hub failures with exponential backoff; one log line per retry."""
    attempt = 1
    while True:
        try:
            return action()
        except Exception as err:
            if attempt >= attempts or not is_transient(err):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("%s failed (%s); retry %d of %d in %.3g s", what, _first_line(err), attempt, attempts - 1,
                        delay)
            time.sleep(delay)
            attempt += 1


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: connection refused or reset, timeout, or an HTTP 5xx answer."""
    status = _status(err)
    return isinstance(err, _transport_errors()) or (status is not None and status >= 500)


# -- one push -------------------------------------------------------------------------------------
def _push_once(files: dict[str, bytes], repo_id: str, private: bool, revision: str | None, token: str,
               message: str, description: str) -> str:
    """One attempt: nothing if the target already holds ``files``, else create repo/branch and commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    head = _head_if_unchanged(api, repo_id, revision, files)
    if head is not None:
        log.info("%s already holds this run at %s; nothing to push", _label(repo_id, revision), head[:12])
        return f"{api.endpoint}/{repo_id}/commit/{head}"
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path, data) for path, data in files.items()]
    info = api.create_commit(repo_id, operations, revision=revision, commit_message=message,
                             commit_description=description)
    return info.commit_url


def _head_if_unchanged(api: Any, repo_id: str, revision: str | None, files: dict[str, bytes]) -> str | None:
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
        same = (entry.lfs.sha256 == hashlib.sha256(data).hexdigest() if entry.lfs is not None
                else entry.blob_id == git_hash(data))
        if not same:
            return None
    return info.sha


def _files_to_publish(output_dir: Path, repo_id: str, license: str | None) -> dict[str, bytes]:
    """Repo path -> content: the published run files and the card built for ``repo_id``."""
    files = {name: (output_dir / name).read_bytes() for name in PUBLISHED if (output_dir / name).is_file()}
    files["README.md"] = str(build_card(output_dir, repo_id, license=license)).encode("utf-8")
    return files


def _require_finished(output_dir: Path) -> None:
    for required in (COMPLETE_MARKER, "adapter_model.safetensors", "adapter_config.json", "recipe.yaml"):
        if not (output_dir / required).is_file():
            raise HubError(f"{output_dir} is not a finished dpo_hub run: {required} is missing. Train it first.")


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
def _validate_repo_id(repo_id: str) -> None:
    """Reject a malformed id before any network call."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"{repo_id!r} is not a valid Hub repo id ({_first_line(err)}); use 'namespace/name' "
                       "with letters, digits, '-', '_' and '.'.") from err


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
        raise HubError(f"cannot push to {repo_id}: the token of {user!r} is read-only; {LOGIN_HINT} with a "
                       "token that has write access.")
    writable = _writable_namespaces(me, access)
    if namespace not in writable:
        raise HubError(f"cannot push to {repo_id}: the token of {user!r} cannot write to namespace {namespace!r} "
                       f"(it can write to {', '.join(sorted(writable)) or 'nothing'}); push to one of those, e.g. "
                       f"{user}/{name}, or use a token with write access to {namespace!r}.")
    return f"{namespace}/{name}"


def _writable_namespaces(me: dict[str, Any], access: dict[str, Any]) -> set[str]:
    """The user and the orgs it may write to; for fine-grained tokens, the entities with ``repo.write``."""
    if access.get("role") == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        return {s["entity"]["name"] for s in scoped if "repo.write" in s.get("permissions", [])}
    orgs = {o["name"] for o in me.get("orgs", []) if o.get("roleInOrg", "write") not in ("read", "reader")}
    return {me.get("name", ""), *orgs}


# -- error translation ---------------------------------------------------------------------------
@contextmanager
def hub_errors(repo_id: str, revision: str | None = None, token: str | None = None, action: str = "reach",
               attempts: int = 1) -> Iterator[None]:
    """Turn any huggingface_hub / HTTP failure inside the block into one ``HubError`` (token redacted)."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        message = hub_error_message(err, repo_id, revision, action, attempts)
        raise HubError(_redact(message, token)) from err


def hub_error_message(err: BaseException, repo_id: str, revision: str | None = None, action: str = "reach",
                      attempts: int = 1) -> str:
    """What went wrong with ``repo_id`` and what to do, for one huggingface_hub or transport error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    label, status = _label(repo_id, revision), _status(err)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(err, RevisionNotFoundError):
        return (f"{repo_id}: revision {revision or 'main'!r} does not exist; check the branch, tag or commit "
                "(HfApi().list_repo_refs lists them).")
    if isinstance(err, RepositoryNotFoundError):
        return (f"{repo_id}: no such repo on {constants.ENDPOINT}, or it is private and your token cannot see it; "
                f"check the id, or {LOGIN_HINT} with a token that can read it.")
    if status == 401:
        return f"cannot {action} {label}: the Hub rejected the token (invalid or expired); {LOGIN_HINT} with a valid token."
    if status == 403:
        return (f"cannot {action} {label}: the token has no write access there ({_first_line(err)}); use a write "
                "token for that namespace.")
    if isinstance(err, OfflineModeIsEnabled):
        return f"cannot {action} {label}: HF_HUB_OFFLINE is set; unset it to use the Hub."
    if is_transient(err) or _is_unreachable(err):
        what = f"HTTP {status}" if status else f"{type(err).__name__}: {_first_line(err)}"
        unchanged = " the repo is unchanged (a push lands in one commit or not at all)." if "push" in action else ""
        return (f"cannot {action} {label}: the Hub at {constants.ENDPOINT} failed{tried} ({what});{unchanged} "
                "Check your network or HF_ENDPOINT and run the same command again.")
    return f"cannot {action} {label}: {type(err).__name__}: {_first_line(err)}"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _is_unreachable(err: BaseException) -> bool:
    """snapshot_download's way of saying the Hub could not be reached (no cached copy either)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    return isinstance(err, LocalEntryNotFoundError)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _label(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _redact(text: str, token: str | None) -> str:
    """Never let a token reach a message."""
    from huggingface_hub import get_token

    for secret in {token, get_token()} - {None, ""}:
        text = text.replace(secret, "<token>")
    return text
