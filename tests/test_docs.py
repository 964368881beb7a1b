"""The README is the front door and the docs stay true: set-up lines, links, documented defaults.

- README.md is at most 120 lines and opens with the two set-up commands; the second is CI's test command
  (``.ci/run`` runs ``python -m pytest -q``).
- Every relative link in README.md and docs/*.md names a file that exists (anchors are not checked).
- The defaults table of docs/recipes.md (``| key | default | what |``) equals the shipped recipe's values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 120
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target); images are links too but rare here
CODE_SPAN = re.compile(r"`[^`\n]*`")


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans (where a link is a link)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(CODE_SPAN.sub("", line))
    return "\n".join(kept)


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


# ---- README -----------------------------------------------------------------------------------------------
def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_opens_with_the_two_setup_commands() -> None:
    first = code_blocks(README.read_text(encoding="utf-8"))[0]
    assert len(first) == 2, f"the first code block must be exactly the two set-up lines, got {first}"
    main_job, tests = first
    assert "pip install" in main_job and "accelerate launch -m dpo_hub.recipes.gpt2_ultrafeedback" in main_job
    assert "pip install" in tests and tests.endswith("&& python -m pytest -q"), tests
    assert "python -m pytest -q\n" in (ROOT / ".ci" / "run").read_text() + "\n", (
        "CI must run the README's command"
    )


# ---- links ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page: Path) -> None:
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_docs_pages_exist_and_readme_links_each() -> None:
    names = {p.name for p in DOCS}
    expected = {
        "recipes.md",
        "data.md",
        "speed.md",
        "distributed.md",
        "hub.md",
        "compare.md",
        "plugins.md",
        "architecture.md",
    }
    assert expected <= names, f"missing docs pages: {sorted(expected - names)}"
    linked = {Path(t.split("#")[0]).name for t in relative_links(README) if t.startswith("docs/")}
    assert expected <= linked, f"README.md does not link: {sorted(expected - linked)}"


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [a](missing.md), [b](https://example.com), `[c](in_code.md)`, [d](#anchor).\n"
        "```\n[e](in_block.md)\n```\n"
    )
    assert relative_links(page) == ["missing.md"]


# ---- documented defaults ----------------------------------------------------------------------------------
def defaults_table(text: str) -> dict[str, str]:
    """key -> documented default (the cell as written, backticks removed) from ``| key | default | ... |``
    rows."""
    rows, in_table = {}, False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] == ["key", "default"]:
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def documented_value(cell: str):
    """A table cell read as YAML, as a recipe file would read it (``1e-4``-style numbers as floats)."""
    value = yaml.safe_load(cell)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def code_value(values: dict, key: str):
    for part in key.split("."):
        if not isinstance(values, dict) or part not in values:
            raise KeyError(f"docs/recipes.md documents {key!r}, which the recipe does not have")
        values = values[part]
    return values


def same(documented, actual) -> bool:
    if isinstance(actual, bool) or isinstance(documented, bool):
        return documented is actual
    if isinstance(actual, (int, float)) and isinstance(documented, (int, float)):
        return math.isclose(documented, actual, rel_tol=1e-12) and type(documented) is type(actual)
    if isinstance(actual, (list, tuple)):
        return isinstance(documented, (list, tuple)) and list(documented) == list(actual)
    return documented == actual


def documented_defaults() -> dict[str, str]:
    return defaults_table((ROOT / "docs" / "recipes.md").read_text(encoding="utf-8"))


def test_defaults_table_covers_the_keys_people_ask_about() -> None:
    rows = documented_defaults()
    for key in (
        "dpo.precision",
        "dpo.disable_dropout",
        "dpo.gradient_checkpointing",
        "dpo.beta",
        "dpo.learning_rate",
        "lora.r",
        "lora.lora_alpha",
        "lora.target_modules",
        "dpo.reference_cache",
        "model.name",
    ):
        assert key in rows, f"docs/recipes.md's defaults table lacks {key}"


@pytest.mark.parametrize("key", sorted(documented_defaults()))
def test_documented_default_equals_the_code(key: str) -> None:
    from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

    documented, actual = documented_value(documented_defaults()[key]), code_value(RECIPE.to_dict(), key)
    assert same(documented, actual), (
        f"docs/recipes.md says {key} defaults to {documented!r}; the shipped recipe has {actual!r}"
    )


def test_dpo_and_lora_defaults_are_the_presets_own() -> None:
    """The table describes DPOPreset() and LoraPreset() too: the shipped recipe uses them unchanged."""
    from dpo_hub import DPOPreset, LoraPreset
    from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

    assert RECIPE.dpo == DPOPreset() and RECIPE.lora == LoraPreset()


def test_the_defaults_check_sees_a_wrong_value() -> None:
    rows = defaults_table(
        "| key | default | what |\n|---|---|---|\n| `dpo.precision` | `fp32` | x |\n"
        "| `dpo.disable_dropout` | `false` | x |\n| `dpo.learning_rate` | `1e-4` | x |\n\nafter"
    )
    assert rows == {"dpo.precision": "fp32", "dpo.disable_dropout": "false", "dpo.learning_rate": "1e-4"}
    values = {"dpo": {"precision": "auto", "disable_dropout": True, "learning_rate": 0.0001}}
    assert not same(documented_value(rows["dpo.precision"]), code_value(values, "dpo.precision"))
    assert not same(documented_value(rows["dpo.disable_dropout"]), code_value(values, "dpo.disable_dropout"))
    assert same(documented_value(rows["dpo.learning_rate"]), code_value(values, "dpo.learning_rate"))
    assert not same(documented_value("1"), 1.0) and not same(documented_value("true"), 1)
