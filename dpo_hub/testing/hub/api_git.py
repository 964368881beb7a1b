"""Git-like endpoints: preupload, commit, refs, branches, tags and commit history."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response

from .api_lfs import upload_mode
from .context import Call
from .errors import HubError, bad_request
from .objects import Operation, RepoRef, lfs_entry, local_oid

COMMITS_PAGE_SIZE = 50
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise bad_request(f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise bad_request(f"Invalid path in repo: {path!r}")
    return path


def _ignored(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p.strip("/")) or fnmatch.fnmatch(name, p) for p in patterns)


def preupload(call: Call) -> Response:
    """``POST /api/{type}s/{repo}/preupload/{rev}`` (upload mode chosen by :func:`upload_mode`)."""
    ref = call.repo()
    call.require_write(ref)
    head = call.resolve(ref, call.params["rev"])
    tree = call.store.get_commit(ref, head).tree
    data = call.json()
    gitignore = data.get("gitIgnore")
    if gitignore is None and ".gitignore" in tree:
        gitignore = call.store.blob_path(tree[".gitignore"]["sha256"]).read_text(errors="replace")
    patterns = [ln.strip() for ln in (gitignore or "").splitlines() if ln.strip() and not ln.startswith("#")]
    files = []
    for item in data.get("files", []):
        path = _check_path(item.get("path") if isinstance(item, dict) else None)
        existing = tree.get(path)
        files.append(
            {
                "path": path,
                "uploadMode": upload_mode(call, tree, path, item),
                "shouldIgnore": _ignored(path, patterns),
                "oid": local_oid(existing) if existing else None,
            }
        )
    return JSONResponse({"files": files, "commitOid": head})


def _operations(call: Call) -> tuple[dict[str, Any], list[Operation]]:
    header: dict[str, Any] = {}
    ops: list[Operation] = []
    for raw in call.body.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            key, value = line["key"], line["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"Malformed commit payload line: {exc}") from exc
        if not isinstance(value, dict):
            raise bad_request(f"Malformed commit payload line: {key} value must be an object")
        if key == "header":
            header = value
        elif key == "file":
            content = value.get("content", "")
            try:
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            except (binascii.Error, ValueError) as exc:
                raise bad_request(f"Invalid base64 content for {value.get('path')}") from exc
            ops.append(("add", _check_path(value.get("path")), call.store.put_blob(data)))
        elif key == "lfsFile":
            path = _check_path(value.get("path"))
            oid = str(value.get("oid", ""))
            blob = call.store.blob_path(oid)
            if not _SHA256_RE.match(oid) or not blob.is_file():
                raise HubError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
            ops.append(("add", path, lfs_entry(oid, blob.stat().st_size)))
        elif key == "deletedFile":
            ops.append(("delete", _check_path(value.get("path")), None))
        elif key == "deletedFolder":
            ops.append(
                (
                    "delete_folder",
                    _check_path(str(value.get("path", "")).rstrip("/")),
                    None,
                )
            )
        else:
            raise bad_request(f"Unsupported commit operation: {key}")
    if not isinstance(header.get("summary"), str) or not header["summary"]:
        raise bad_request("Commit header with a non-empty 'summary' is required")
    return header, ops


def commit(call: Call) -> Response:
    """``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON body), ``?create_pr=1`` opens a PR ref."""
    ref = call.repo()
    call.require_write(ref)
    assert call.user is not None
    header, ops = _operations(call)
    new, pr_num = call.store.commit(
        ref,
        call.params["rev"],
        ops,
        title=header["summary"],
        message=header.get("description") or "",
        author=call.user.user,
        parent_commit=header.get("parentCommit"),
        create_pr=call.flag("create_pr"),
    )
    url = call.repo_url(ref)
    return JSONResponse(
        {
            "success": True,
            "commitOid": new.id,
            "commitUrl": f"{url}/commit/{new.id}",
            "pullRequestUrl": f"{url}/discussions/{pr_num}" if pr_num else None,
        }
    )


def list_refs(call: Call) -> Response:
    """``GET /api/{type}s/{repo}/refs`` (``?include_prs=1`` adds PR refs)."""
    ref = call.repo()
    call.require_read(ref)
    refs = call.store.refs(ref)

    def fmt(kind: str, prefix: str) -> list[dict[str, str]]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in sorted(refs[kind].items())]

    body = {
        "branches": fmt("branches", "refs/heads/"),
        "converts": [],
        "tags": fmt("tags", "refs/tags/"),
    }
    if call.flag("include_prs"):
        body["pullRequests"] = fmt("prs", "refs/pr/")
    return JSONResponse(body)


def _valid_ref_name(name: str) -> str:
    if not name or name.startswith(("refs/", "/")) or name.endswith("/") or ".." in name or " " in name:
        raise bad_request(f"Invalid reference for a branch or tag: {name!r}")
    return name


def branch(call: Call) -> Response:
    """``POST|DELETE /api/{type}s/{repo}/branch/{branch}`` (``startingPoint`` defaults to main)."""
    ref = call.repo()
    call.require_write(ref)
    name = _valid_ref_name(call.params["rev"])
    if call.method == "DELETE":
        if name == "main":
            raise HubError(403, "Cannot delete the default branch")
        call.store.set_ref(ref, "branches", name, None)
        return JSONResponse({})
    data = call.json()
    start = call.resolve(ref, data.get("startingPoint") or "main")
    if name in call.store.refs(ref)["tags"]:
        raise HubError(409, f"A tag named {name} already exists")
    call.store.set_ref(ref, "branches", name, start)
    return JSONResponse({})


def create_tag(call: Call) -> Response:
    """``POST /api/{type}s/{repo}/tag/{rev}`` with ``{"tag": ..., "message": ...}``."""
    ref = call.repo()
    call.require_write(ref)
    target = call.resolve(ref, call.params["rev"])
    tag = _valid_ref_name(str(call.json().get("tag", "")))
    call.store.set_ref(ref, "tags", tag, target)
    return JSONResponse({})


def delete_tag(call: Call) -> Response:
    """``DELETE /api/{type}s/{repo}/tag/{tag}``."""
    ref = call.repo()
    call.require_write(ref)
    call.store.set_ref(ref, "tags", call.params["rev"], None)
    return JSONResponse({})


def list_commits(call: Call) -> Response:
    """``GET /api/{type}s/{repo}/commits/{rev}``: newest first, paginated with a ``Link`` header."""
    ref: RepoRef = call.repo()
    call.require_read(ref)
    head = call.resolve(ref, call.params["rev"])
    page = call.int_param("p")
    limit = COMMITS_PAGE_SIZE
    items = []
    for i, c in enumerate(call.store.history(ref, head)):
        if i < page * limit:
            continue
        if len(items) == limit:
            query = urlencode({**dict(call.query), "p": page + 1})
            link = f'<{call.base_url}{call.params["_path"]}?{query}>; rel="next"'
            return JSONResponse(items, headers={"Link": link})
        items.append(
            {
                "id": c.id,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": a, "avatar": None} for a in c.authors],
                "date": c.date,
            }
        )
    return JSONResponse(items)
