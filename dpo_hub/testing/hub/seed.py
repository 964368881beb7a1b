"""Populate a :class:`Store` directly (no HTTP): seeding repos and committing whole file sets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .auth import DEFAULT_USER
from .storage import Operation, RepoRef, Store

SeedEntry = tuple[str, str, Mapping[str, bytes]]


def commit_files(
    store: Store,
    repo_type: str,
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    message: str = "Upload files",
    author: str = DEFAULT_USER,
    private: bool = False,
    revision: str = "main",
) -> str:
    """Create ``repo_id`` if needed and commit ``files`` (``path -> bytes``) in one commit.

    Returns the new commit id.
    """
    ref = RepoRef(repo_type, repo_id).validate()
    if store.get_repo(ref) is None:
        store.create_repo(ref, owner=author, private=private)
    ops: list[Operation] = [("add", path.strip("/"), store.put_blob(data)) for path, data in files.items()]
    commit, _ = store.commit(ref, revision, ops, title=message, author=author)
    return commit.id


def seed(store: Store, entries: Iterable[SeedEntry], author: str = DEFAULT_USER) -> list[RepoRef]:
    """Commit each ``(repo_type, repo_id, files)`` entry whose repo does not exist yet (public).

    Returns the repos that were created. Existing repos are left untouched, so seeding is
    idempotent across restarts with the same root.
    """
    created = []
    for repo_type, repo_id, files in entries:
        ref = RepoRef(repo_type, repo_id).validate()
        if store.get_repo(ref) is not None:
            continue
        commit_files(store, repo_type, repo_id, files, message="Seed repository", author=author)
        created.append(ref)
    return created


def seed_embedded(store: Store) -> list[RepoRef]:
    """Seed the tiny GPT-2 model and preference sample shipped by :mod:`dpo_hub.embedded`."""
    from dpo_hub.embedded import hub_seed  # lazy: only needed for ``--seed``

    return seed(store, hub_seed())
