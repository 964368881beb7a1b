"""Plugins: what other installed packages add to dpo_hub through entry points, next to the built-ins.

A ``Registry`` is a read-only mapping name -> object: the built-ins given to it, then every entry point
of its group (``dpo_hub.adapters``, ``dpo_hub.recipes``; preset registries may use ``dpo_hub.lora_presets``
and ``dpo_hub.dpo_presets``), loaded on first use. A plugin that fails to import, has the wrong type or
takes a name already taken is skipped with one warning naming its distribution and entry point; it never
breaks a command that does not use it, and ``why_missing(name)`` says why a name the user asked for is absent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dpo_hub")
ADAPTERS_GROUP = "dpo_hub.adapters"
RECIPES_GROUP = "dpo_hub.recipes"
LORA_PRESETS_GROUP = "dpo_hub.lora_presets"  # for a name registry of LoRA preset factories (lora.preset)
DPO_PRESETS_GROUP = "dpo_hub.dpo_presets"  # for a name registry of DPO preset factories (dpo.preset)


@dataclass(frozen=True)
class Origin:
    """Where a registered name comes from: ``dpo_hub`` itself or an installed distribution's entry point."""

    distribution: str  # "dpo-hub" for the built-ins
    version: str
    entry_point: str  # "name = module:attr" as declared, or the built-in's import path
    group: str

    def __str__(self) -> str:
        return (
            f"entry point {self.entry_point!r} (group {self.group}) of distribution "
            f"{self.distribution} {self.version}"
        )


class Registry(Mapping[str, Any]):
    """Built-ins plus the entry points of ``group`` that pass ``check`` (``check(name, obj)``: None or why
    not)."""

    def __init__(
        self, group: str, builtins: Mapping[str, Any], check: Callable[[str, Any], str | None], what: str
    ) -> None:
        self.group, self.what, self._builtins, self._check = group, what, dict(builtins), check
        self._loaded: dict[str, Any] | None = None
        self.origins: dict[str, Origin] = {}
        self.broken: dict[str, str] = {}  # name -> why its plugin was skipped

    def _entries(self) -> dict[str, Any]:
        if self._loaded is None:
            loaded = dict(self._builtins)
            self.origins = {n: Origin("dpo-hub", "", _path(obj), self.group) for n, obj in loaded.items()}
            for point in _entry_points(self.group):
                origin = Origin(*_distribution(point), f"{point.name} = {point.value}", self.group)
                if (
                    loaded.get(point.name) is not None
                    and self.origins[point.name].distribution == origin.distribution
                ):
                    continue  # dpo_hub's own entry point for a built-in it already lists
                problem, obj = _load(point, loaded, self._check)
                if problem:
                    self.broken[point.name] = f"{origin} was skipped: {problem}"
                    log.warning("plugin %s", self.broken[point.name])
                else:
                    loaded[point.name], self.origins[point.name] = obj, origin
            self._loaded = loaded
        return self._loaded

    def __getitem__(self, name: str) -> Any:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def why_missing(self, name: str) -> str:
        """``''``, or a sentence on the broken plugin that would have provided ``name``."""
        self._entries()
        return f" ({self.what} {name!r}: {self.broken[name]})" if name in self.broken else ""


def _load(point: Any, taken: Mapping[str, Any], check: Callable[[str, Any], str | None]) -> tuple[str, Any]:
    """(why the entry point cannot be used or ``''``, the loaded object)."""
    if point.name in taken:
        return (
            f"the name {point.name!r} is already taken by {_path(taken[point.name])}; rename the entry point",
            None,
        )
    try:
        obj = point.load()
    except (
        Exception
    ) as err:  # any import-time failure of third-party code: skip the plugin, keep dpo_hub working
        return (
            f"it cannot be imported ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err) else ''})",
            None,
        )
    problem = check(point.name, obj)
    return (problem or "", obj)


def _entry_points(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=group), key=lambda p: (p.name, p.value))


def _distribution(point: Any) -> tuple[str, str]:
    dist = getattr(point, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("(unknown distribution)", "")


def _path(obj: Any) -> str:
    """``module.Class`` of a class or function, the name of a module."""
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if module and name else getattr(obj, "__name__", repr(obj))
