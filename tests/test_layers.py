"""The architecture holds: dpo_hub's packages import one way, in the order data flows, with no cycle.

Every import counts, including those inside functions: a lazy upward import is still a cycle in the
design. A module may import modules of its own package or of a package earlier in ``PACKAGES`` (the same
order as ``dpo_hub/__init__.py``'s docstring); a new top-level module or package must be placed there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_hub"
# the order data flows: recipe -> data/sources -> training -> outputs -> compare/card -> hub -> CLI
PACKAGES = [
    ["errors", "runtime", "upstream", "plugins", "embedded"],  # the base every package may use
    ["config"],
    ["sources"],
    ["data"],
    ["recipe"],
    ["artifacts"],
    ["compare"],
    ["training"],
    ["hub"],
    ["export"],  # GGUF: merges (hub.merge) and pushes (hub.transfer)
    [
        "cli",
        "recipes",
        "__main__",
    ],  # what users type: the CLI lists recipes, a recipe module runs the CLI's launcher
]
RANK = {name: layer for layer, names in enumerate(PACKAGES) for name in names}


def package_of(module: str) -> str:
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    target = PACKAGE.joinpath(*dotted.split(".")) if dotted else PACKAGE
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def imports_in(source: str, name: str, is_package: bool = False) -> set[str]:
    """dpo_hub modules imported anywhere in ``source`` of module ``name`` (``""``: the package
    ``__init__``)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("dpo_hub").lstrip(".")
                for a in node.names
                if a.name.split(".")[0] == "dpo_hub"
            }
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = ".".join(filter(None, [base, node.module]))
            elif (node.module or "").split(".")[0] == "dpo_hub":
                target = node.module.removeprefix("dpo_hub").lstrip(".")
            else:
                continue
            subs = {".".join(filter(None, [target, a.name])) for a in node.names}
            found |= {s for s in subs if is_module(s)} or {
                target
            }  # "from dpo_hub import embedded" is a module
            found |= {target} if any(not is_module(s) for s in subs) else set()
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_in(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py")
        for p in PACKAGE.rglob("*.py")
    }


def test_no_import_cycle():
    edges, done = graph(), set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in done and nxt != "":
                visit(nxt, [*stack, nxt])
        done.add(node)

    for start in sorted(edges):
        if start:  # the package __init__ re-exports the public API of every layer
            visit(start, [start])


def test_every_module_has_a_package_in_the_order():
    placed = {package_of(name) for name in graph() if name and not name.startswith("testing")}
    assert placed == set(RANK), (
        "place new top-level modules and packages in PACKAGES (and dpo_hub/__init__.py)"
    )


@pytest.mark.parametrize("module", sorted(n for n in graph() if n and not n.startswith("testing")))
def test_imports_follow_the_package_order(module):
    mine = RANK[package_of(module)]
    upward = sorted(t for t in graph()[module] if t and RANK.get(package_of(t), len(PACKAGES)) > mine)
    assert not upward, f"{module} (package {package_of(module)}) imports {upward}: data flows one way"


def test_test_tooling_uses_only_the_base():
    for name, targets in graph().items():
        if name.startswith("testing"):
            outside = {t for t in targets if not t.startswith("testing")}
            assert outside <= set(PACKAGES[0]), f"{name} imports {outside}"


def test_ls_shows_the_flow():
    """Top-level modules are only the base and the recipe; every other concept is a package."""
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert modules == sorted(["errors", "runtime", "upstream", "plugins", "recipe"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("from dpo_hub.training.run import train", {"training.run"}),
        ("def late():\n    from dpo_hub.hub import runs", {"hub.runs"}),
        ("import dpo_hub.cli.main", {"cli.main"}),
        ("from dpo_hub import train", {""}),  # a name from the package __init__: everything
        ("from . import hub", {"hub"}),
    ],
)
def test_the_checker_sees_every_kind_of_import(line, expected):
    assert imports_in(line, "recipe") == expected
