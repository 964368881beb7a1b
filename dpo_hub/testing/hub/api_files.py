"""File endpoints: tree listing, paths-info and ``resolve`` downloads (HEAD/GET, Range)."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import FileResponse, JSONResponse, Response

from . import trees
from .context import Call
from .errors import HubError, entry_not_found


def list_tree(call: Call) -> Response:
    """``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` with ``recursive``/``expand`` and cursor paging."""
    ref = call.repo()
    call.require_read(ref)
    commit_id = call.resolve(ref, call.params["rev"])
    path = call.params.get("path", "").strip("/")
    expand = call.flag("expand")
    paths = trees.list_dir(call.store.get_commit(ref, commit_id).tree, path, call.flag("recursive"))
    if paths is None:
        raise entry_not_found(path or "/", commit_id)
    size = call.hub.expanded_tree_page_size if expand else call.hub.tree_page_size
    start = call.int_param("cursor")
    page = paths[start : start + size]
    headers = {}
    if start + size < len(paths):
        query = urlencode({**dict(call.query), "cursor": start + size})
        headers["Link"] = f'<{call.base_url}{call.params["_path"]}?{query}>; rel="next"'
    return JSONResponse(trees.entries(call.store, ref, commit_id, page, expand), headers=headers)


def paths_info(call: Call) -> Response:
    """``POST /api/{type}s/{repo}/paths-info/{rev}`` (form or JSON ``paths``/``expand``)."""
    ref = call.repo()
    call.require_read(ref)
    commit_id = call.resolve(ref, call.params["rev"])
    data = call.form_or_json()
    wanted = data.get("paths", data.get("paths[]", []))
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    expand = str(data.get("expand", "false")).lower() in ("1", "true")
    tree = call.store.get_commit(ref, commit_id).tree
    folders = trees.folders_of(tree)
    existing = [p.strip("/") for p in wanted if p.strip("/") in tree or p.strip("/") in folders]
    return JSONResponse(trees.entries(call.store, ref, commit_id, existing, expand))


def resolve(call: Call) -> Response:
    """``HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}``: content served directly (no redirect)."""
    ref = call.repo()
    call.require_read(ref)
    commit_id = call.resolve(ref, call.params["rev"])
    path = call.params.get("path", "")
    tree = call.store.get_commit(ref, commit_id).tree
    item = tree.get(path)
    if item is None:
        raise entry_not_found(path, commit_id)
    blob = call.store.blob_path(item["sha256"])
    if not blob.is_file():
        raise HubError(500, f"Blob for {path} is missing from storage")
    etag = item["sha256"] if item.get("lfs") else item["oid"]
    headers = {
        "ETag": f'"{etag}"',
        "X-Repo-Commit": commit_id,
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if item.get("lfs"):
        headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(item["size"])})
    return FileResponse(blob, headers=headers, media_type="application/octet-stream")
