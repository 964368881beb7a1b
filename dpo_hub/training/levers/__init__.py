"""Speed and memory levers, each reporting whether it is active and why (``metrics.json`` ``levers``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lever:
    """Whether a speed or memory lever is active in this run, and why (logged, and in metrics.json)."""

    active: bool
    why: str

    def to_dict(self) -> dict:
        return {"active": self.active, "why": self.why}
