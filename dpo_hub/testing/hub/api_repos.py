"""Account and repository endpoints: whoami, create/delete/settings, repo info, YAML validation."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from .context import PLURAL_TYPES, Call
from .errors import HubError, bad_request, unauthorized
from .objects import REPO_TYPES, RepoRef, lfs_pointer
from .util import object_id, parse_card_data, validate_card_yaml

_README_LIMIT = 1_000_000


def whoami(call: Call) -> Response:
    """``GET /api/whoami-v2``."""
    if call.user is None:
        raise unauthorized()
    user = call.user
    return JSONResponse(
        {
            "type": "user",
            "id": object_id(["user", user.user])[:24],
            "name": user.user,
            "fullname": user.user,
            "email": f"{user.user}@localhost",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "avatarUrl": "",
            "orgs": [
                {
                    "type": "org",
                    "name": org,
                    "fullname": org,
                    "id": object_id(["org", org])[:24],
                    "roleInOrg": "write",
                }
                for org in user.orgs
            ],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": user.name,
                    "role": user.role,
                    "createdAt": "2024-01-01T00:00:00.000Z",
                },
            },
        }
    )


def _ref_from_payload(call: Call, data: dict[str, Any]) -> RepoRef:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("Missing repo name")
    if "/" in name:
        namespace, name = name.split("/", 1)
    else:
        namespace = data.get("organization") or (call.user.user if call.user else None)
    if namespace is None:
        raise unauthorized()
    repo_type = data.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise bad_request(f"Invalid repo type: {repo_type}")
    return RepoRef(repo_type, f"{namespace}/{name}").validate()


def create_repo(call: Call) -> Response:
    """``POST /api/repos/create``; 409 (with ``url``) when the repo already exists."""
    data = call.json()
    ref = _ref_from_payload(call, data)
    user = call.require_namespace(ref.namespace, f"create a {ref.repo_type} under {ref.namespace}")
    private = bool(data.get("private")) or data.get("visibility") == "private"
    url = call.repo_url(ref)
    try:
        call.store.create_repo(ref, owner=user.user, private=private)
    except HubError as exc:
        if exc.status == 409:
            body = {
                "error": f"You already created this {ref.repo_type} repo",
                "url": url,
            }
            return JSONResponse(body, status_code=409, headers={"X-Error-Message": body["error"]})
        raise
    return JSONResponse({"url": url, "name": ref.repo_id, "id": ref.repo_id})


def delete_repo(call: Call) -> Response:
    """``DELETE /api/repos/delete``."""
    ref = _ref_from_payload(call, call.json())
    call.require_write(ref)
    call.store.delete_repo(ref)
    return JSONResponse({})


def update_settings(call: Call) -> Response:
    """``PUT /api/{type}s/{repo}/settings`` (visibility only)."""
    ref = call.repo()
    call.require_write(ref)
    data = call.json()
    if "private" in data or "visibility" in data:
        private = bool(data["private"]) if "private" in data else data["visibility"] == "private"
        call.store.update_repo(ref, private=private)
    return JSONResponse({})


def auth_check(call: Call) -> Response:
    """``GET /api/{type}s/{repo}/auth-check``."""
    call.require_read(call.repo())
    return JSONResponse({})


def validate_yaml(call: Call) -> Response:
    """``POST /api/validate-yaml``: always a JSON body with ``errors`` and ``warnings``."""
    data = call.json()
    errors, warnings = validate_card_yaml(str(data.get("content", "")))
    body = {
        "errors": [{"message": e} for e in errors],
        "warnings": [{"message": w} for w in warnings],
    }
    return JSONResponse(body, status_code=400 if errors else 200)


def repo_info(call: Call) -> Response:
    """``GET /api/{type}s/{repo}[/revision/{rev}]`` with ``expand``/``blobs`` support."""
    ref = call.repo()
    meta = call.require_read(ref)
    commit_id = call.resolve(ref, call.params.get("rev"))
    commit = call.store.get_commit(ref, commit_id)
    tree = commit.tree
    blobs = call.flag("blobs")
    info: dict[str, Any] = {
        "_id": object_id([ref.repo_type, ref.repo_id])[:24],
        "id": ref.repo_id,
        "author": ref.namespace,
        "sha": commit_id,
        "lastModified": commit.date,
        "createdAt": meta.get("createdAt"),
        "private": bool(meta.get("private")),
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [_sibling(p, e, blobs) for p, e in sorted(tree.items())],
        "usedStorage": sum(e["size"] for e in tree.values()),
    }
    card = _read_json_or_card(call, tree.get("README.md"), card=True)
    if card is not None:
        info["cardData"] = card
        tags = card.get("tags")
        info["tags"] = [tags] if isinstance(tags, str) else list(tags or [])
        if isinstance(card.get("license"), str):
            info["tags"].append(f"license:{card['license']}")
    if ref.repo_type == "model":
        info["modelId"] = ref.repo_id
        info["library_name"] = (card or {}).get("library_name")
        info["pipeline_tag"] = (card or {}).get("pipeline_tag")
        config = _read_json_or_card(call, tree.get("config.json"), card=False)
        if isinstance(config, dict):
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
    expand = call.query.getlist("expand") + call.query.getlist("expand[]")
    if expand:
        info = {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
    return JSONResponse(info)


def _sibling(path: str, entry: dict[str, Any], blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    item: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
    if entry.get("lfs"):
        pointer = lfs_pointer(entry["sha256"], entry["size"])
        item["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": len(pointer)}
    return item


def _read_json_or_card(call: Call, entry: dict[str, Any] | None, card: bool) -> Any:
    if entry is None or entry["size"] > _README_LIMIT:
        return None
    text = call.store.blob_path(entry["sha256"]).read_text(encoding="utf-8", errors="replace")
    if card:
        return parse_card_data(text)
    try:
        return json.loads(text)
    except ValueError:
        return None


def agent_harnesses(call: Call) -> Response:
    """``GET /api/agent-harnesses``: an empty registry (no agent detection offline)."""
    return JSONResponse({"standardEnvVars": [], "harnesses": {}})


def list_repos(call: Call) -> Response:
    """``GET /api/models|datasets|spaces`` with ``author``, ``search`` and ``limit`` filters."""
    repo_type = PLURAL_TYPES[call.params["rtype"]]
    author, search = call.query.get("author"), call.query.get("search", "").lower()
    limit = call.int_param("limit")
    found = []
    for ref in call.store.list_repos():
        if (
            ref.repo_type != repo_type
            or (author and ref.namespace != author)
            or search not in ref.repo_id.lower()
        ):
            continue
        if not call.can_read(ref):
            continue
        meta = call.store.get_repo(ref) or {}
        head = call.store.resolve(ref, "main")
        commit = call.store.get_commit(ref, head) if head else None
        found.append(
            {
                "_id": object_id([ref.repo_type, ref.repo_id])[:24],
                "id": ref.repo_id,
                "author": ref.namespace,
                "private": bool(meta.get("private")),
                "createdAt": meta.get("createdAt"),
                "lastModified": commit.date if commit else None,
                "sha": head,
                "downloads": 0,
                "likes": 0,
                "tags": [],
            }
        )
        if limit and len(found) >= limit:
            break
    return JSONResponse(found)
