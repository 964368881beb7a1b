"""Views over a commit's flat tree: folders, tree/paths-info entries and last-commit lookups."""

from __future__ import annotations

from typing import Any

from .objects import lfs_pointer
from .storage import Commit, RepoRef, Store
from .util import object_id


def folders_of(tree: dict[str, Any]) -> set[str]:
    """Every folder path implied by the file paths of ``tree``."""
    found: set[str] = set()
    for path in tree:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            found.add("/".join(parts[:i]))
    return found


def folder_oid(tree: dict[str, Any], folder: str) -> str:
    """Deterministic id of a folder, derived from the files below it."""
    prefix = folder + "/"
    return object_id(sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(prefix)))


def list_dir(tree: dict[str, Any], path: str, recursive: bool) -> list[str] | None:
    """Paths (files and folders) under folder ``path`` (``""`` = root); ``None`` if not a folder."""
    folders = folders_of(tree)
    if path and path not in folders:
        return None
    prefix = path + "/" if path else ""
    candidates = [p for p in (*tree, *folders) if p.startswith(prefix) and p != path]
    if not recursive:
        candidates = [p for p in candidates if "/" not in p[len(prefix) :]]
    return sorted(candidates)


def entry(tree: dict[str, Any], path: str, last_commit: Commit | None = None) -> dict[str, Any]:
    """Hub-style tree entry for a file or folder."""
    if path in tree:
        item: dict[str, Any] = {
            "type": "file",
            "oid": tree[path]["oid"],
            "size": tree[path]["size"],
            "path": path,
        }
        if tree[path].get("lfs"):
            pointer = lfs_pointer(tree[path]["sha256"], tree[path]["size"])
            item["lfs"] = {
                "oid": tree[path]["sha256"],
                "size": tree[path]["size"],
                "pointerSize": len(pointer),
            }
    else:
        item = {
            "type": "directory",
            "oid": folder_oid(tree, path),
            "size": 0,
            "path": path,
        }
    if last_commit is not None:
        item["lastCommit"] = {
            "id": last_commit.id,
            "title": last_commit.title,
            "date": last_commit.date,
        }
    return item


def last_commits(store: Store, ref: RepoRef, head: str, paths: list[str]) -> dict[str, Commit]:
    """For each path, the most recent commit (reachable from ``head``) that changed it."""

    def signature(commit: Commit, path: str) -> Any:
        if path in commit.tree:
            return commit.tree[path]["oid"]
        prefix = path + "/"
        return tuple(sorted((p, e["oid"]) for p, e in commit.tree.items() if p.startswith(prefix))) or None

    found: dict[str, Commit] = {}
    pending = list(paths)
    history = store.history(ref, head)
    current = next(history)
    for parent in history:
        still = []
        for path in pending:
            if signature(current, path) != signature(parent, path):
                found[path] = current
            else:
                still.append(path)
        pending, current = still, parent
        if not pending:
            break
    for path in pending:
        found[path] = current  # unchanged since the root commit
    return found


def entries(
    store: Store, ref: RepoRef, commit_id: str, paths: list[str], expand: bool
) -> list[dict[str, Any]]:
    """Tree entries for ``paths`` at ``commit_id`` (with ``lastCommit`` when ``expand``)."""
    tree = store.get_commit(ref, commit_id).tree
    lasts = last_commits(store, ref, commit_id, paths) if expand and paths else {}
    return [entry(tree, p, lasts.get(p)) for p in paths]
