"""Users and access tokens known to the local hub."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import unauthorized

Role = Literal["read", "write"]

DEFAULT_USER = "tester"
DEFAULT_WRITE_TOKEN = "hf_test_write"
DEFAULT_READ_TOKEN = "hf_test_read"


@dataclass(frozen=True)
class TokenInfo:
    """What a token grants: acting as ``user`` with ``role`` (``read``/``write``), plus ``orgs``."""

    user: str
    role: Role = "write"
    orgs: tuple[str, ...] = ()
    name: str = "token"

    @property
    def can_write(self) -> bool:
        """Whether the token may create repos and push commits."""
        return self.role == "write"

    def namespaces(self) -> set[str]:
        """Namespaces the token may write to (own user + orgs)."""
        return {self.user, *self.orgs}


@dataclass
class TokenRegistry:
    """Mapping ``token -> TokenInfo``; ships with the default ``tester`` tokens.

    Example::

        registry = TokenRegistry()
        registry.add("hf_alice", user="alice", role="write")
    """

    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    include_defaults: bool = True

    def __post_init__(self) -> None:
        if self.include_defaults:
            self.tokens.setdefault(DEFAULT_WRITE_TOKEN, TokenInfo(DEFAULT_USER, "write", name="write"))
            self.tokens.setdefault(DEFAULT_READ_TOKEN, TokenInfo(DEFAULT_USER, "read", name="read"))

    def add(
        self,
        token: str,
        user: str,
        role: Role = "write",
        orgs: Iterable[str] = (),
        name: str | None = None,
    ) -> TokenInfo:
        """Register ``token`` for ``user``; returns the stored :class:`TokenInfo`."""
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', got {role!r}")
        info = TokenInfo(user=user, role=role, orgs=tuple(orgs), name=name or f"{user}-{role}")
        self.tokens[token] = info
        return info

    def update(self, spec: Mapping[str, Any]) -> None:
        """Add tokens from a mapping ``{token: {"user": ..., "role": ..., "orgs": [...]}}``."""
        for token, entry in spec.items():
            if isinstance(entry, TokenInfo):
                self.tokens[token] = entry
                continue
            if not isinstance(entry, Mapping) or "user" not in entry:
                raise ValueError("every token entry must be a mapping with a 'user' key")
            self.add(
                token,
                str(entry["user"]),
                entry.get("role", "write"),
                entry.get("orgs", ()),
                entry.get("name"),
            )

    @classmethod
    def from_file(cls, path: str | Path) -> TokenRegistry:
        """Load a JSON or YAML file ``{"tokens": {...}, "include_defaults": true}``."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping):
            raise TypeError(f"{path}: expected a mapping at top level")
        registry = cls(include_defaults=bool(data.get("include_defaults", True)))
        registry.update(data.get("tokens") or {})
        return registry

    def lookup(self, authorization: str | None) -> TokenInfo | None:
        """Resolve an ``Authorization`` header; ``None`` if absent, 401 :class:`HubError` if invalid."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        info = self.tokens.get(token.strip())
        if info is None:
            raise unauthorized()
        return info

    def known_users(self) -> set[str]:
        """All users and orgs referenced by a token."""
        names: set[str] = set()
        for info in self.tokens.values():
            names |= info.namespaces()
        return names
