"""Plain data types of the local hub (repo addresses, commits, operations) and pure helpers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import bad_request, entry_not_found
from .util import git_blob_sha1

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
"""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")

# {"sha256": str, "size": int, "oid": git blob id as reported by the Hub, "lfs": bool (optional)}
FileEntry = dict[str, Any]
Operation = tuple[Literal["add", "delete", "delete_folder"], str, FileEntry | None]


@dataclass(frozen=True)
class RepoRef:
    """A repository address: ``repo_type`` (model/dataset/space) and ``repo_id`` (``namespace/name``)."""

    repo_type: str
    repo_id: str

    @property
    def namespace(self) -> str:
        """The owner (user or org) part of the id."""
        return self.repo_id.split("/", 1)[0]

    def validate(self) -> RepoRef:
        """Raise a 400 :class:`HubError` for a malformed type or id."""
        if self.repo_type not in REPO_TYPES:
            raise bad_request(f"Invalid repo type: {self.repo_type}")
        parts = self.repo_id.split("/")
        if len(parts) != 2 or not all(_NAME_RE.match(p) and ".." not in p and "--" not in p for p in parts):
            raise bad_request(f"Invalid repo id: {self.repo_id!r}")
        return self


@dataclass
class Commit:
    """An immutable commit: parents, full flat tree ``path -> FileEntry`` and metadata."""

    id: str
    parents: list[str]
    tree: dict[str, FileEntry]
    title: str
    message: str = ""
    authors: list[str] = field(default_factory=list)
    date: str = ""


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file the Hub stores in git for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_entry(sha256: str, size: int) -> FileEntry:
    """Tree entry of an LFS file: its git oid is the one of its pointer file."""
    return {"sha256": sha256, "size": size, "oid": git_blob_sha1(lfs_pointer(sha256, size)), "lfs": True}


def local_oid(entry: FileEntry) -> str:
    """What ``huggingface_hub`` compares against in preupload: sha256 for LFS, git oid otherwise."""
    return entry["sha256"] if entry.get("lfs") else entry["oid"]


def empty_refs(head: str) -> dict[str, dict[str, str]]:
    """Refs of a new repo: only ``main`` pointing at ``head``."""
    return {"branches": {DEFAULT_BRANCH: head}, "tags": {}, "prs": {}}


def split_ref(revision: str) -> tuple[str | None, str]:
    """``refs/heads/x`` -> (branches, x); ``refs/tags/x`` -> tags; ``refs/pr/1`` -> prs; else (None, rev)."""
    for prefix, kind in (
        ("refs/heads/", "branches"),
        ("refs/tags/", "tags"),
        ("refs/pr/", "prs"),
    ):
        if revision.startswith(prefix):
            return kind, revision[len(prefix) :]
    return None, revision


def apply_operations(
    tree: dict[str, FileEntry], operations: Sequence[Operation], head: str
) -> dict[str, FileEntry]:
    """Apply commit operations to a copy of ``tree`` (404 ``EntryNotFound`` for missing deletions)."""
    for op, path, entry in operations:
        if op == "add" and entry is not None:
            tree[path] = entry
        elif op == "delete":
            if tree.pop(path, None) is None:
                raise entry_not_found(f"A file with this name doesn't exist: {path}", head)
        elif op == "delete_folder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise entry_not_found(f"A folder with this name doesn't exist: {path}", head)
            for p in doomed:
                del tree[p]
    return tree
