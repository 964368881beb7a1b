"""Every third-party module dpo_hub imports is declared in pyproject.toml.

Reads every ``dpo_hub/**/*.py`` with ``ast`` (imports inside functions count: a lazy import still fails on
a machine without the package), keeps the absolute imports that are neither the standard library nor
dpo_hub, and maps each module to the distribution that installs it (``import yaml`` is ``PyYAML``). What
the library imports outside ``dpo_hub/testing/`` must be a core dependency: ``pip install dpo-hub`` without
extras has to run it. Modules named only in strings (``importlib.import_module("httpx2")``, the optional
``bitsandbytes`` probe) are not seen here; each is guarded where it is used.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dpo_hub"
OPTIONAL_ONLY = (
    "testing",
)  # dpo_hub/testing/: the local Hub server and its pytest fixtures (extras hub-server, dev)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path`` that are not stdlib and not dpo_hub."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "dpo_hub"}


def imports_by_module() -> dict[str, set[Path]]:
    """``{module: files importing it}`` over every dpo_hub source file."""
    out: dict[str, set[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in third_party_imports(path):
            out.setdefault(name, set()).add(path.relative_to(ROOT))
    return out


def distributions(module: str) -> set[str]:
    """The distributions that install ``module`` (normalised); the module's own name if none is installed."""
    return {normalise(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


def declared(pyproject: Path = ROOT / "pyproject.toml") -> tuple[set[str], set[str]]:
    """(core dependencies, everything declared: core and every extra), as normalised distribution names."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = {normalise(Requirement(r).name) for r in project.get("dependencies", [])}
    extras = {
        normalise(Requirement(r).name)
        for reqs in project.get("optional-dependencies", {}).values()
        for r in reqs
    }
    return core, (core | extras) - {normalise(project["name"])}


def test_the_scan_sees_imports_everywhere():
    """The walk finds lazy imports inside functions and maps an import name to its distribution."""
    found = imports_by_module()
    assert {"torch", "trl", "yaml", "psutil"} <= set(found), sorted(found)
    assert distributions("yaml") == {"pyyaml"}


def test_every_import_is_declared():
    _, everything = declared()
    missing = {
        module: sorted(map(str, paths))
        for module, paths in imports_by_module().items()
        if not distributions(module) & everything
    }
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or an extra): {missing}"


def test_the_library_outside_testing_needs_no_extra():
    core, _ = declared()
    missing = {
        module: sorted(map(str, paths))
        for module, paths in imports_by_module().items()
        if not distributions(module) & core
        and any(p.relative_to("dpo_hub").parts[0] not in OPTIONAL_ONLY for p in paths)
    }
    assert not missing, (
        f"imported by the library but only in an extra (or nowhere), not in dependencies: {missing}"
    )
