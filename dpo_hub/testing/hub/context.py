"""Per-request context and the access checks shared by all endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers, QueryParams

from .auth import TokenInfo, TokenRegistry
from .errors import (
    bad_request,
    forbidden,
    repo_not_found,
    revision_not_found,
    unauthorized,
)
from .storage import RepoRef, Store

PLURAL_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass
class HubState:
    """Everything the endpoints need: storage, tokens and tunables."""

    store: Store
    tokens: TokenRegistry
    tree_page_size: int = 1000
    expanded_tree_page_size: int = 50
    upload_mode: str = "auto"
    lfs_tickets: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass
class Call:
    """A parsed request: route params, query, headers, full body and the authenticated token."""

    hub: HubState
    method: str
    params: dict[str, str]
    query: QueryParams
    headers: Headers
    body: bytes
    base_url: str
    user: TokenInfo | None

    @property
    def store(self) -> Store:
        """Shortcut to the hub's store."""
        return self.hub.store

    def json(self) -> dict[str, Any]:
        """Decode a JSON object body (400 otherwise); an empty body gives ``{}``."""
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise bad_request(f"Invalid JSON body: {exc}") from exc
        if not isinstance(data, dict):
            raise bad_request("Expected a JSON object body")
        return data

    def form_or_json(self) -> dict[str, Any]:
        """Decode an url-encoded form (lists kept for repeated keys) or a JSON body."""
        ctype = self.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            parsed = parse_qs(self.body.decode(), keep_blank_values=True)
            return {k: (v if len(v) > 1 or k in ("paths", "paths[]") else v[0]) for k, v in parsed.items()}
        return self.json()

    def flag(self, name: str) -> bool:
        """Interpret a boolean query parameter (``1``/``true``)."""
        return self.query.get(name, "").lower() in ("1", "true", "yes")

    def int_param(self, name: str) -> int:
        """Non-negative integer query parameter (0 when absent, 400 when malformed)."""
        raw = self.query.get(name, "") or "0"
        if not raw.isdigit():
            raise bad_request(f"Query parameter {name!r} must be a non-negative integer")
        return int(raw)

    def repo(self) -> RepoRef:
        """The repo addressed by the ``rtype``/``ns``/``name`` route params."""
        rtype = PLURAL_TYPES.get(self.params.get("rtype", "models"))
        if rtype is None:
            raise bad_request(f"Unknown repo type {self.params.get('rtype')}")
        return RepoRef(rtype, f"{self.params['ns']}/{self.params['name']}")

    def repo_url(self, ref: RepoRef) -> str:
        """Web URL of a repo on this server."""
        return f"{self.base_url}/{URL_PREFIXES[ref.repo_type]}{ref.repo_id}"

    # -- access ----------------------------------------------------------------------------------
    def can_read(self, ref: RepoRef) -> bool:
        """Whether the caller may see the repo (exists and public, or private and theirs)."""
        meta = self.store.get_repo(ref)
        if meta is None:
            return False
        return not meta.get("private") or (self.user is not None and ref.namespace in self.user.namespaces())

    def require_read(self, ref: RepoRef) -> dict[str, Any]:
        """Repo metadata if readable; otherwise ``RepoNotFound`` (401 anonymous, 404 authenticated)."""
        if not self.can_read(ref):
            raise repo_not_found(ref.repo_id, status=401 if self.user is None else 404)
        meta = self.store.get_repo(ref)
        assert meta is not None
        return meta

    def require_write(self, ref: RepoRef) -> dict[str, Any]:
        """Repo metadata if the caller may push to it; 401/404/403 otherwise."""
        if self.user is None:
            raise unauthorized()
        meta = self.require_read(ref)
        self.require_namespace(ref.namespace, f"push to {ref.repo_id}")
        return meta

    def require_namespace(self, namespace: str, action: str) -> TokenInfo:
        """Ensure the caller holds a write token covering ``namespace``."""
        if self.user is None:
            raise unauthorized()
        if not self.user.can_write:
            raise forbidden(f"You don't have the rights to {action}: your token is read-only")
        if namespace not in self.user.namespaces():
            raise forbidden(f"You don't have the rights to {action}: namespace {namespace} is not yours")
        return self.user

    def resolve(self, ref: RepoRef, revision: str | None) -> str:
        """Commit id of ``revision`` (default ``main``) or a ``RevisionNotFound`` error."""
        revision = revision or "main"
        commit = self.store.resolve(ref, revision)
        if commit is None:
            raise revision_not_found(revision)
        return commit
