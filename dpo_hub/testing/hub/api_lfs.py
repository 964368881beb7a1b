"""Git LFS (basic transfer) support and the choice between ``regular`` and ``lfs`` uploads.

``huggingface_hub`` uploads ``lfs`` files through Xet whenever ``hf_xet`` is installed, unless
``HF_HUB_DISABLE_XET=1``; this server does not implement Xet. The upload mode policy is thus:

* ``regular``: every file is committed inline (base64 in the commit payload); works for every
  client, Xet or not.
* ``lfs``: Hub-like choice (``.gitattributes`` LFS patterns, files >= 10 MB, binary samples);
  clients must run with ``HF_HUB_DISABLE_XET=1``.
* ``auto`` (default): ``lfs`` rules for the ``datasets`` library (its ``push_to_hub`` deletes shard
  files right after ``preupload_lfs_files``, so it needs real pre-uploads), ``regular`` otherwise.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import secrets
from typing import Any

from starlette.responses import JSONResponse, Response

from .context import Call
from .errors import HubError, bad_request
from .objects import RepoRef

logger = logging.getLogger("dpo_hub.testing.hub")
LFS_THRESHOLD = 10 * 1024 * 1024
UPLOAD_MODES = ("auto", "regular", "lfs")
XET_UNSUPPORTED = (
    "dpo_hub local hub does not implement Xet storage: set HF_HUB_DISABLE_XET=1 in the client environment"
)


def _lfs_patterns(call: Call, tree: dict[str, Any]) -> list[str]:
    entry = tree.get(".gitattributes")
    if entry is None:
        return []
    text = call.store.blob_path(entry["sha256"]).read_text(errors="replace")
    return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]


def upload_mode(call: Call, tree: dict[str, Any], path: str, item: dict[str, Any]) -> str:
    """``regular`` or ``lfs`` for a preupload entry, following the hub's upload mode policy."""
    policy = call.hub.upload_mode
    if policy == "auto":
        policy = "lfs" if "datasets/" in call.headers.get("user-agent", "") else "regular"
    if policy == "regular":
        return "regular"
    size = int(item.get("size") or 0)
    try:
        sample = base64.b64decode(item.get("sample") or "")
    except ValueError:
        sample = b""
    name = path.rsplit("/", 1)[-1]
    patterns = _lfs_patterns(call, tree)
    matched = any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p.lstrip("/")) for p in patterns)
    return "lfs" if size > 0 and (matched or size >= LFS_THRESHOLD or b"\0" in sample) else "regular"


def _git_ref(call: Call) -> RepoRef:
    name = call.params["gitname"]
    if not name.endswith(".git"):
        raise HubError(404, f"dpo_hub local hub: no route for {call.params['_path']}")
    call.params["name"] = name[: -len(".git")]
    return call.repo()


def lfs_batch(call: Call) -> Response:
    """``POST /[{type}s/]{repo}.git/info/lfs/objects/batch`` (``upload`` operation, basic transfer)."""
    ref = _git_ref(call)
    call.require_write(ref)
    data = call.json()
    if data.get("operation") != "upload":
        raise bad_request("dpo_hub local hub only supports LFS uploads")
    objects = []
    for obj in data.get("objects", []):
        oid, size = str(obj.get("oid", "")), obj.get("size")
        if len(oid) != 64 or not isinstance(size, int):
            objects.append(
                {"oid": oid, "size": size or 0, "error": {"code": 422, "message": "Invalid object"}}
            )
            continue
        item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if not call.store.blob_path(oid).is_file():
            ticket = secrets.token_urlsafe(24)
            call.hub.lfs_tickets[ticket] = (oid, size)
            item["actions"] = {
                "upload": {"href": f"{call.base_url}/_lfs/upload/{ticket}", "header": {}},
                "verify": {"href": f"{call.base_url}/_lfs/verify/{ticket}", "header": {}},
            }
        objects.append(item)
    return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})


def lfs_upload(call: Call) -> Response:
    """``PUT /_lfs/upload/{ticket}``: the pre-authorised upload URL handed out by the batch call."""
    oid, size = _ticket(call)
    if len(call.body) != size or hashlib.sha256(call.body).hexdigest() != oid:
        raise bad_request(f"Uploaded content does not match LFS object {oid} ({size} bytes)")
    call.store.put_blob(call.body)
    return JSONResponse({})


def lfs_verify(call: Call) -> Response:
    """``POST /_lfs/verify/{ticket}``: confirm the object is stored."""
    oid, _ = _ticket(call)
    if not call.store.blob_path(oid).is_file():
        raise HubError(404, f"LFS object {oid} was not uploaded")
    return JSONResponse({"message": "ok"})


def _ticket(call: Call) -> tuple[str, int]:
    found = call.hub.lfs_tickets.get(call.params["ticket"])
    if found is None:
        raise HubError(403, "Unknown or expired LFS upload URL")
    return found


def xet_token(call: Call) -> Response:
    """``GET /api/{type}s/{repo}/xet-{read,write}-token/...``: explain that Xet is unsupported."""
    logger.warning(XET_UNSUPPORTED)  # hf_xet hides the response body: make the hint visible server-side
    raise HubError(501, XET_UNSUPPORTED)
