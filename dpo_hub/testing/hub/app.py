"""Starlette application: routes requests on the *raw* (still percent-encoded) path.

Revisions such as ``refs%2Fpr%2F1`` or ``feature%2Fx`` must stay a single path segment, so the
dispatcher splits ``scope["raw_path"]`` on ``/`` and only then percent-decodes each segment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import api_files, api_git, api_lfs, api_repos
from .auth import TokenRegistry
from .context import PLURAL_TYPES, Call, HubState
from .errors import HubError
from .storage import Store

logger = logging.getLogger("dpo_hub.testing.hub")
Handler = Callable[[Call], Response]

# Patterns: literal segment, "{name}" (one segment), "{name*}" (rest of the path, may be empty),
# "{name+}" (rest of the path, at least one segment).
_REPO = ("api", "{rtype}", "{ns}", "{name}")
ROUTES: list[tuple[frozenset[str], tuple[str, ...], Handler]] = [
    (frozenset({"GET"}), ("api", "whoami-v2"), api_repos.whoami),
    (frozenset({"GET"}), ("api", "agent-harnesses"), api_repos.agent_harnesses),
    (frozenset({"POST"}), ("api", "repos", "create"), api_repos.create_repo),
    (frozenset({"DELETE"}), ("api", "repos", "delete"), api_repos.delete_repo),
    (frozenset({"POST"}), ("api", "validate-yaml"), api_repos.validate_yaml),
    (frozenset({"GET"}), ("api", "{rtype}"), api_repos.list_repos),
    (frozenset({"GET"}), _REPO, api_repos.repo_info),
    (frozenset({"GET"}), (*_REPO, "revision", "{rev+}"), api_repos.repo_info),
    (frozenset({"PUT"}), (*_REPO, "settings"), api_repos.update_settings),
    (frozenset({"GET"}), (*_REPO, "auth-check"), api_repos.auth_check),
    (frozenset({"POST"}), (*_REPO, "preupload", "{rev+}"), api_git.preupload),
    (frozenset({"POST"}), (*_REPO, "commit", "{rev+}"), api_git.commit),
    (frozenset({"GET"}), (*_REPO, "refs"), api_git.list_refs),
    (frozenset({"POST", "DELETE"}), (*_REPO, "branch", "{rev+}"), api_git.branch),
    (frozenset({"POST"}), (*_REPO, "tag", "{rev+}"), api_git.create_tag),
    (frozenset({"DELETE"}), (*_REPO, "tag", "{rev+}"), api_git.delete_tag),
    (frozenset({"GET"}), (*_REPO, "commits", "{rev+}"), api_git.list_commits),
    (frozenset({"GET"}), (*_REPO, "tree", "{rev}", "{path*}"), api_files.list_tree),
    (frozenset({"POST"}), (*_REPO, "paths-info", "{rev+}"), api_files.paths_info),
    (frozenset({"GET", "POST"}), (*_REPO, "xet-write-token", "{rev*}"), api_lfs.xet_token),
    (frozenset({"GET", "POST"}), (*_REPO, "xet-read-token", "{rev*}"), api_lfs.xet_token),
    (
        frozenset({"POST"}),
        ("{rtype}", "{ns}", "{gitname}", "info", "lfs", "objects", "batch"),
        api_lfs.lfs_batch,
    ),
    (frozenset({"POST"}), ("{ns}", "{gitname}", "info", "lfs", "objects", "batch"), api_lfs.lfs_batch),
    (frozenset({"PUT"}), ("_lfs", "upload", "{ticket}"), api_lfs.lfs_upload),
    (frozenset({"POST"}), ("_lfs", "verify", "{ticket}"), api_lfs.lfs_verify),
    (
        frozenset({"GET", "HEAD"}),
        ("{rtype}", "{ns}", "{name}", "resolve", "{rev}", "{path+}"),
        api_files.resolve,
    ),
    (
        frozenset({"GET", "HEAD"}),
        ("{ns}", "{name}", "resolve", "{rev}", "{path+}"),
        api_files.resolve,
    ),
]


def match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """Match decoded ``segments`` against a route pattern; returns the captured params."""
    params: dict[str, str] = {}
    for i, part in enumerate(pattern):
        if part.endswith(("*}", "+}")):
            rest = segments[i:]
            if part.endswith("+}") and not rest:
                return None
            params[part[1:-2]] = "/".join(rest)
            return params
        if i >= len(segments):
            return None
        if part.startswith("{"):
            params[part[1:-1]] = segments[i]
        elif part != segments[i]:
            return None
    if len(segments) != len(pattern):
        return None
    if "rtype" in params and params["rtype"] not in PLURAL_TYPES:
        return None
    return params


def find_route(method: str, raw_path: str) -> tuple[Handler, dict[str, str]] | None:
    """First route matching ``method`` and the raw request path."""
    segments = [unquote(s) for s in raw_path.strip("/").split("/")]
    for methods, pattern, handler in ROUTES:
        params = match(pattern, segments)
        if params is not None and method in methods:
            return handler, params
    return None


def create_app(
    store: Store | str | os.PathLike[str],
    tokens: TokenRegistry | None = None,
    tree_page_size: int = 1000,
    upload_mode: str = "auto",
) -> Starlette:
    """Build the ASGI app serving ``store`` (a :class:`Store` or a root directory).

    ``upload_mode`` is ``auto``, ``regular`` or ``lfs`` (see :mod:`dpo_hub.testing.hub.api_lfs`).
    """
    if upload_mode not in api_lfs.UPLOAD_MODES:
        raise ValueError(f"upload_mode must be one of {api_lfs.UPLOAD_MODES}, got {upload_mode!r}")
    state = HubState(
        store=store if isinstance(store, Store) else Store(store),
        tokens=tokens or TokenRegistry(),
        tree_page_size=tree_page_size,
        expanded_tree_page_size=min(50, tree_page_size),
        upload_mode=upload_mode,
    )

    async def dispatch(request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        try:
            found = find_route(request.method, raw_path)
            if found is None:
                logger.warning("unknown route %s %s", request.method, raw_path)
                raise HubError(404, f"dpo_hub local hub: no route for {request.method} {raw_path}")
            handler, params = found
            params["_path"] = raw_path
            call = Call(
                hub=state,
                method=request.method,
                params=params,
                query=request.query_params,
                headers=request.headers,
                body=await request.body(),
                base_url=str(request.base_url).rstrip("/"),
                user=state.tokens.lookup(request.headers.get("authorization")),
            )
            return await run_in_threadpool(handler, call)
        except HubError as exc:
            return exc.to_response()
        except Exception as exc:  # pragma: no cover - surfaced to the client as a 500
            logger.exception("internal error on %s %s", request.method, raw_path)
            return HubError(500, f"Internal error: {type(exc).__name__}: {exc}").to_response()

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(routes=[Route("/{rest:path}", dispatch, methods=methods)])
    app.state.hub = state
    return app
