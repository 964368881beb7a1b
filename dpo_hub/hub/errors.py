"""Hub failures as one ``HubError`` line each, and retries of the transient ones.

Maps huggingface_hub's and the HTTP client's errors to a message that names the repo (and revision)
and says what to do; the token is redacted from every message. ``with_retries`` retries connection
errors, timeouts and HTTP 5xx with exponential backoff, never a 4xx.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from dpo_hub.errors import HubError

log = logging.getLogger("dpo_hub")
T = TypeVar("T")
PUSH_ATTEMPTS = 4  # one try and three retries ...
PUSH_BASE_DELAY = 1.0  # ... after 1, 2 and 4 seconds
LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"


def with_retries(
    action: Callable[[], T], what: str, attempts: int = PUSH_ATTEMPTS, base_delay: float = PUSH_BASE_DELAY
) -> T:
    """``action()``, retried on transient Hub failures with exponential backoff; one log line per retry."""
    attempt = 1
    while True:
        try:
            return action()
        except Exception as err:
            if attempt >= attempts or not is_transient(err):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning(
                "%s failed (%s); retry %d of %d in %.3g s",
                what,
                first_line(err),
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
            attempt += 1


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: connection refused or reset, timeout, or an HTTP 5xx answer."""
    status = http_status(err)
    return isinstance(err, _transport_errors()) or (status is not None and status >= 500)


@contextmanager
def hub_errors(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    action: str = "reach",
    attempts: int = 1,
) -> Iterator[None]:
    """Turn any huggingface_hub / HTTP failure inside the block into one ``HubError`` (token redacted)."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        message = hub_error_message(err, repo_id, revision, action, attempts)
        raise HubError(_redact(message, token)) from err


def hub_error_message(
    err: BaseException, repo_id: str, revision: str | None = None, action: str = "reach", attempts: int = 1
) -> str:
    """What went wrong with ``repo_id`` and what to do, for one huggingface_hub or transport error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    label, status = repo_label(repo_id, revision), http_status(err)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(err, RevisionNotFoundError):
        return (
            f"{repo_id}: revision {revision or 'main'!r} does not exist; check the branch, tag or commit "
            "(HfApi().list_repo_refs lists them)."
        )
    if isinstance(err, RepositoryNotFoundError):
        return (
            f"{repo_id}: no such repo on {constants.ENDPOINT}, or it is private and your token cannot see "
            f"it; check the id, or {LOGIN_HINT} with a token that can read it."
        )
    if status == 401:
        return (
            f"cannot {action} {label}: the Hub rejected the token (invalid or expired); {LOGIN_HINT} with "
            "a valid token."
        )
    if status == 403:
        return (
            f"cannot {action} {label}: the token has no write access there ({first_line(err)}); use a write "
            "token for that namespace."
        )
    if isinstance(err, OfflineModeIsEnabled):
        return f"cannot {action} {label}: HF_HUB_OFFLINE is set; unset it to use the Hub."
    if is_transient(err) or _is_unreachable(err):
        what = f"HTTP {status}" if status else f"{type(err).__name__}: {first_line(err)}"
        unchanged = (
            " the repo is unchanged (a push lands in one commit or not at all)." if "push" in action else ""
        )
        return (
            f"cannot {action} {label}: the Hub at {constants.ENDPOINT} failed{tried} ({what});{unchanged} "
            "Check your network or HF_ENDPOINT and run the same command again."
        )
    return f"cannot {action} {label}: {type(err).__name__}: {first_line(err)}"


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


def http_status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def repo_label(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _redact(text: str, token: str | None) -> str:
    """Never let a token reach a message."""
    from huggingface_hub import get_token

    for secret in {token, get_token()} - {None, ""}:
        text = text.replace(secret, "<token>")
    return text
