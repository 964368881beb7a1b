"""Error type raised by the local hub and its conversion to Hub-style HTTP responses."""

from __future__ import annotations

from starlette.responses import JSONResponse

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


class HubError(Exception):
    """An error answered to the client the way the Hugging Face Hub does.

    The response carries ``X-Error-Message`` (and ``X-Error-Code`` when ``code`` is set), which
    ``huggingface_hub.utils.hf_raise_for_status`` maps onto its typed exceptions
    (``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})

    def to_response(self) -> JSONResponse:
        """Build the JSON error response (``{"error": message}``) with the error headers."""
        headers = {"X-Error-Message": _header_safe(self.message), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def _header_safe(text: str) -> str:
    """Header values must be latin-1 and single-line."""
    return text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")


def repo_not_found(repo_id: str, status: int = 404) -> HubError:
    """``RepoNotFound`` error (used for missing repos and private repos the caller cannot see)."""
    return HubError(status, f"Repository not found: {repo_id}", code="RepoNotFound")


def revision_not_found(revision: str) -> HubError:
    """``RevisionNotFound`` error."""
    return HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


def entry_not_found(path: str, commit: str | None = None) -> HubError:
    """``EntryNotFound`` error; ``commit`` is sent as ``X-Repo-Commit`` so clients can cache the miss."""
    headers = {"X-Repo-Commit": commit} if commit else {}
    return HubError(404, f"Entry not found: {path}", code="EntryNotFound", headers=headers)


def unauthorized(message: str = INVALID_CREDENTIALS) -> HubError:
    """401 error for a bad or missing token."""
    return HubError(401, message)


def forbidden(message: str) -> HubError:
    """403 error for a token lacking rights."""
    return HubError(403, message)


def bad_request(message: str) -> HubError:
    """400 error."""
    return HubError(400, message)
