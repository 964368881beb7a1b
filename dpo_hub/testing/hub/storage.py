"""On-disk, crash-safe storage of repos, content-addressed blobs, commits and refs.

Layout under ``root``::

    blobs/<sha256[:2]>/<sha256>              file contents (content addressed)
    repos/<type>s/<namespace>/<name>/
        repo.json                            visibility, owner, creation date
        commits/<commit id>.json             immutable commit objects (full flat tree)
        refs.json                            branches, tags and PR refs -> commit ids
    tmp/                                     scratch space for atomic writes

Every file is written to ``tmp/`` first and moved into place with ``os.replace``; a commit only
becomes visible when ``refs.json`` is replaced, which is always the last step. A server killed at
any point therefore leaves each repo at a previous, complete commit.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import HubError, bad_request, repo_not_found, revision_not_found
from .objects import (
    GITATTRIBUTES,
    HEX_RE,
    Commit,
    FileEntry,
    Operation,
    RepoRef,
    apply_operations,
    empty_refs,
    lfs_entry,
    split_ref,
)
from .util import (
    atomic_write,
    atomic_write_json,
    git_blob_sha1,
    now_iso,
    object_id,
    read_json,
    sha256_hex,
)

__all__ = ["Commit", "FileEntry", "Operation", "RepoRef", "Store"]


class Store:
    """Thread-safe storage for the local hub (see module docstring for the layout).

    Locking is per instance: only one process (normally the server) should write at a time.

    ``commit_delay`` (seconds) pauses between writing a commit object and publishing it via the
    ref update; tests use it to kill the server in the middle of a commit.
    """

    def __init__(self, root: str | Path, commit_delay: float = 0.0) -> None:
        self.root = Path(root)
        self.commit_delay = commit_delay
        self.tmp = self.root / "tmp"
        for sub in ("blobs", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._commits: dict[tuple[RepoRef, str], Commit] = {}

    def recover(self) -> None:
        """Drop scratch files left by a killed server (call once, before serving)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    # -- repos ---------------------------------------------------------------------------------
    def repo_dir(self, ref: RepoRef) -> Path:
        """Directory of a repo (may not exist)."""
        return self.root / "repos" / f"{ref.repo_type}s" / ref.repo_id

    def get_repo(self, ref: RepoRef) -> dict[str, Any] | None:
        """Repo metadata (``repo.json``) or ``None`` if the repo does not exist."""
        path = self.repo_dir(ref) / "repo.json"
        return read_json(path) if path.is_file() else None

    def list_repos(self) -> list[RepoRef]:
        """All repos currently stored."""
        found = []
        for meta in sorted((self.root / "repos").glob("*/*/*/repo.json")):
            found.append(
                RepoRef(
                    meta.parent.parent.parent.name[:-1],
                    f"{meta.parent.parent.name}/{meta.parent.name}",
                )
            )
        return found

    def create_repo(self, ref: RepoRef, owner: str, private: bool = False) -> dict[str, Any]:
        """Create a repo holding the Hub's usual ``initial commit`` (a ``.gitattributes`` file).

        Raises a 409 :class:`HubError` if it already exists.
        """
        ref.validate()
        with self._lock:
            final = self.repo_dir(ref)
            if final.exists():
                raise HubError(409, "You already created this repo")
            staging = self.tmp / f"repo-{uuid.uuid4().hex}"
            (staging / "commits").mkdir(parents=True)
            meta = {
                "id": ref.repo_id,
                "type": ref.repo_type,
                "private": private,
                "owner": owner,
            }
            meta["createdAt"] = now_iso()
            entry = self.put_blob(GITATTRIBUTES)
            commit = self._new_commit([], {".gitattributes": entry}, "initial commit", "", ["system"], ref)
            atomic_write_json(staging / "commits" / f"{commit.id}.json", asdict(commit), self.tmp)
            atomic_write_json(staging / "repo.json", meta, self.tmp)
            atomic_write_json(staging / "refs.json", empty_refs(commit.id), self.tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)  # atomic publication of the whole repo
            return meta

    def update_repo(self, ref: RepoRef, **fields: Any) -> dict[str, Any]:
        """Update repo metadata fields (e.g. ``private``)."""
        with self._lock:
            meta = self.get_repo(ref)
            if meta is None:
                raise repo_not_found(ref.repo_id)
            meta.update(fields)
            atomic_write_json(self.repo_dir(ref) / "repo.json", meta, self.tmp)
            return meta

    def delete_repo(self, ref: RepoRef) -> None:
        """Delete a repo (atomically unpublished by a rename, then removed)."""
        with self._lock:
            if self.get_repo(ref) is None:
                raise repo_not_found(ref.repo_id)
            trash = self.tmp / f"trash-{uuid.uuid4().hex}"
            os.rename(self.repo_dir(ref), trash)
            self._commits = {k: v for k, v in self._commits.items() if k[0] != ref}
        shutil.rmtree(trash, ignore_errors=True)

    # -- refs ------------------------------------------------------------------------------------
    def refs(self, ref: RepoRef) -> dict[str, dict[str, str]]:
        """``{"branches": {...}, "tags": {...}, "prs": {...}}`` mapping names to commit ids."""
        path = self.repo_dir(ref) / "refs.json"
        if not path.is_file():
            raise repo_not_found(ref.repo_id)
        return read_json(path)

    def _write_refs(self, ref: RepoRef, refs: dict[str, dict[str, str]]) -> None:
        atomic_write_json(self.repo_dir(ref) / "refs.json", refs, self.tmp)

    def resolve(self, ref: RepoRef, revision: str) -> str | None:
        """Commit id for a branch, tag, ``refs/...`` name or (short) commit sha; ``None`` if unknown."""
        refs = self.refs(ref)
        kind, name = split_ref(revision)
        if kind is not None:
            return refs[kind].get(name)
        for kind in ("branches", "tags"):
            if revision in refs[kind]:
                return refs[kind][revision]
        if HEX_RE.match(revision):
            commits = self.repo_dir(ref) / "commits"
            if len(revision) == 40:
                return revision if (commits / f"{revision}.json").is_file() else None
            matches = [p.stem for p in commits.glob(f"{revision}*.json")]
            return matches[0] if len(matches) == 1 else None
        return None

    def set_ref(
        self,
        ref: RepoRef,
        kind: str,
        name: str,
        commit_id: str | None,
        exist_ok: bool = False,
    ) -> None:
        """Create/move (``commit_id``) or delete (``None``) a ``branches``/``tags``/``prs`` ref."""
        with self._lock:
            refs = self.refs(ref)
            if commit_id is None:
                if refs[kind].pop(name, None) is None:
                    raise HubError(404, f"Reference {name} does not exist", code="RevisionNotFound")
            else:
                if name in refs[kind] and not exist_ok:
                    raise HubError(409, f"Reference already exists: {name}")
                refs[kind][name] = commit_id
            self._write_refs(ref, refs)

    # -- objects ---------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        """Path of a stored blob."""
        return self.root / "blobs" / sha256[:2] / sha256

    def put_blob(self, data: bytes, lfs: bool = False) -> FileEntry:
        """Store ``data`` (idempotent) and return its tree entry (an LFS entry if ``lfs``)."""
        digest = sha256_hex(data)
        path = self.blob_path(digest)
        if not path.is_file():
            atomic_write(path, data, tmp_dir=self.tmp)
        if lfs:
            return lfs_entry(digest, len(data))
        return {"sha256": digest, "size": len(data), "oid": git_blob_sha1(data)}

    def get_commit(self, ref: RepoRef, commit_id: str) -> Commit:
        """Load a commit object (cached; commits are immutable)."""
        key = (ref, commit_id)
        if key not in self._commits:
            path = self.repo_dir(ref) / "commits" / f"{commit_id}.json"
            if not path.is_file():
                raise revision_not_found(commit_id)
            self._commits[key] = Commit(**read_json(path))
        return self._commits[key]

    def history(self, ref: RepoRef, commit_id: str) -> Iterator[Commit]:
        """Commits reachable from ``commit_id`` following first parents, newest first."""
        current: str | None = commit_id
        while current:
            commit = self.get_commit(ref, current)
            yield commit
            current = commit.parents[0] if commit.parents else None

    def _new_commit(
        self,
        parents: list[str],
        tree: dict[str, FileEntry],
        title: str,
        message: str,
        authors: list[str],
        ref: RepoRef,
    ) -> Commit:
        date = now_iso()
        payload = {
            "repo": ref.repo_id,
            "parents": parents,
            "tree": tree,
            "title": title,
            "message": message,
        }
        cid = object_id({**payload, "authors": authors, "date": date, "nonce": uuid.uuid4().hex})
        return Commit(cid, parents, tree, title, message, authors, date)

    def commit(
        self,
        ref: RepoRef,
        revision: str,
        operations: Sequence[Operation],
        title: str,
        message: str = "",
        author: str = "system",
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[Commit, int | None]:
        """Apply ``operations`` on top of ``revision`` (a branch or ``refs/pr/N``).

        Returns the new commit and the PR number when ``create_pr``. Raises 412 if
        ``parent_commit`` is not the current head.
        """
        with self._lock:
            refs = self.refs(ref)
            kind, name = split_ref(revision)
            kind = kind or "branches"
            if kind not in ("branches", "prs") or name not in refs[kind]:
                if name in refs["tags"] or HEX_RE.match(name):
                    raise bad_request(f"Invalid rev id: {revision} is not a branch")
                raise revision_not_found(revision)
            head = refs[kind][name]
            if parent_commit and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = apply_operations(dict(self.get_commit(ref, head).tree), operations, head)
            new = self._new_commit([head], tree, title, message, [author], ref)
            atomic_write_json(self.repo_dir(ref) / "commits" / f"{new.id}.json", asdict(new), self.tmp)
            if self.commit_delay:
                time.sleep(self.commit_delay)  # test hook: the commit is written but not yet visible
            pr_num = None
            if create_pr:
                pr_num = max((int(n) for n in refs["prs"]), default=0) + 1
                refs["prs"][str(pr_num)] = new.id
            else:
                refs[kind][name] = new.id
            self._write_refs(ref, refs)  # publication point
            return new, pr_num
