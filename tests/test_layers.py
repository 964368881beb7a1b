"""The architecture holds: dpo_hub's modules import one way, down the layers, with no cycle.

Every import counts, including those inside functions: a lazy upward import is still a cycle in the
design. A new module must be placed in ``LAYERS`` (the same list as ``dpo_hub/__init__.py``'s docstring).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_hub"
LAYERS = [  # a module may import modules of a lower layer, or of its own layer listed before it
    ["errors", "embedded", "embedded.make_sample", "outputs", "checkpoints", "plots", "runtime", "accelerate_config",
     "plugins", "standins", "model_spec", "speedups", "cpu_head", "cpu_rows", "reference_logps", "plan", "losses", "coercion",
     "passthrough", "trackers"],
    ["sources", "presets", "data_files", "pair_text", "splits", "data", "mixture"],
    ["recipe", "preflight"],
    ["compare_scoring", "compare_report", "compare"],
    ["card", "hub_errors", "hub"],
    ["training", "runs", "sweep", "merge"],
    ["launch", "recipes", "recipes.smollm2_truthfulqa", "recipes.gpt2_ultrafeedback", "cli", "__main__"],
]
RANK = {name: (layer, i) for layer, names in enumerate(LAYERS) for i, name in enumerate(names)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    target = PACKAGE.joinpath(*dotted.split(".")) if dotted else PACKAGE
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def imports_in(source: str, name: str, is_package: bool = False) -> set[str]:
    """dpo_hub modules imported anywhere in ``source`` of module ``name`` (``""``: the package ``__init__``)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("dpo_hub").lstrip(".") for a in node.names if a.name.split(".")[0] == "dpo_hub"}
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
            found |= {s for s in subs if is_module(s)} or {target}  # "from dpo_hub import embedded" is a module
            found |= {target} if any(not is_module(s) for s in subs) else set()
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_in(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py")
            for p in PACKAGE.rglob("*.py")}


def test_no_import_cycle():
    edges, done = graph(), set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in done and nxt != "":
                visit(nxt, [*stack, nxt])
        done.add(node)

    for start in sorted(edges):
        if start:  # the package __init__ re-exports the public API of every layer
            visit(start, [start])


def test_every_module_has_a_layer():
    placed = {name for name in graph() if name and not name.startswith("testing")}
    assert placed == set(RANK), "place new modules in LAYERS (and in dpo_hub/__init__.py's docstring)"


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_go_down_the_layers(module):
    upward = sorted(t for t in graph()[module] if t not in RANK or RANK[t] >= RANK[module])
    assert not upward, f"{module} (layer {RANK[module][0]}) imports {upward}: data flows one way, downwards"


def test_test_tooling_uses_only_the_bottom_layer():
    for name, targets in graph().items():
        if name.startswith("testing"):
            outside = {t for t in targets if not t.startswith("testing")}
            assert outside <= set(LAYERS[0]), f"{name} imports {outside}"


@pytest.mark.parametrize(("line", "expected"), [
    ("from dpo_hub.training import train", {"training"}),
    ("def late():\n    from dpo_hub import runs", {"runs"}),
    ("import dpo_hub.cli", {"cli"}),
    ("from dpo_hub import train", {""}),  # a name from the package __init__: everything
    ("from . import hub", {"hub"}),
])
def test_the_checker_sees_every_kind_of_import(line, expected):
    assert imports_in(line, "recipe") == expected
