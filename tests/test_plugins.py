"""Plugins: a tiny package, really installed, adds a data adapter and a recipe through entry points.

Two packages are built and installed with pip (offline) into a private folder put on ``PYTHONPATH``:
``theirs-plugin`` (adapter ``theirs`` and recipe ``theirs_recipe``) and ``broken-plugin``, whose entry
points fail to import, have the wrong type or take a built-in's name. dpo_hub must use the first from
YAML and the command line and skip the second with a message naming it, never failing because of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, offline_env, read_metrics, run

ADAPTER = '''
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from dpo_hub.data.adapters import Selection
from dpo_hub.data.pairs import Drop


@dataclass(frozen=True)
class Theirs(Selection):
    """Their question/good/bad rows."""

    kind: ClassVar[str] = "theirs"
    columns: ClassVar[tuple[str, ...]] = ("question", "good", "bad")
    dataset: str = field(default=str(Path(__file__).with_name("pairs.jsonl")), \
metadata={"help": "Their file."})
    prefix: str = field(default="Q: ", metadata={"help": "Put before each question."})

    def to_pair(self, row, tokenizer):
        if row["good"] == row["bad"]:
            raise Drop("theirs: good equals bad")
        return {"prompt": self.prefix + row["question"] + "\\nA:", "chosen": " " + row["good"],
                "rejected": " " + row["bad"]}
'''
RECIPE = '''"""Their recipe: DPO on their question/good/bad pairs."""
import sys

from dpo_hub.cli.launch import run_recipe
from dpo_hub.recipe import Recipe
from theirs_plugin.adapter import Theirs

RECIPE = Recipe(name="theirs_recipe", data=Theirs(), output_dir="outputs/theirs")


def main(argv=None):
    return run_recipe(RECIPE, argv)


if __name__ == "__main__":
    sys.exit(main())
'''
PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1"

[tool.setuptools]
packages = ["{package}"]

[tool.setuptools.package-data]
{package} = ["*.jsonl"]
{entry_points}"""
THEIRS_POINTS = """
[project.entry-points."dpo_hub.adapters"]
theirs = "theirs_plugin.adapter:Theirs"

[project.entry-points."dpo_hub.recipes"]
theirs_recipe = "theirs_plugin.recipe"
"""
BROKEN_POINTS = """
[project.entry-points."dpo_hub.adapters"]
nope = "no_such_module:Thing"
wrong = "broken_plugin:NOT_A_CLASS"
preferences = "broken_plugin:NOT_A_CLASS"

[project.entry-points."dpo_hub.recipes"]
norecipe = "broken_plugin"
"""
ROWS, SAME = 30, (4, 11, 17)  # rows whose good == bad: the plugin's own drop reason


def write_package(root: Path, name: str, package: str, entry_points: str, files: dict[str, str]) -> Path:
    (root / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        PYPROJECT.format(name=name, package=package, entry_points=entry_points)
    )
    for path, text in files.items():
        (root / package / path).write_text(text)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Both plugin packages built and installed by pip, offline, into one folder (not the test's venv)."""
    tmp = tmp_path_factory.mktemp("plugins")
    rows = [
        {
            "question": f"What is {i} plus {i}?",
            "good": f"It is {2 * i}.",
            "bad": f"It is {2 * i}." if i in SAME else "I will not say.",
        }
        for i in range(ROWS)
    ]
    theirs = write_package(
        tmp / "theirs",
        "theirs-plugin",
        "theirs_plugin",
        THEIRS_POINTS,
        {
            "__init__.py": "",
            "adapter.py": ADAPTER,
            "recipe.py": RECIPE,
            "pairs.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
        },
    )
    broken = write_package(
        tmp / "broken",
        "broken-plugin",
        "broken_plugin",
        BROKEN_POINTS,
        {"__init__.py": '"""No recipe here."""\nNOT_A_CLASS = 42\n'},
    )
    target = tmp / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(theirs),
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (target / "theirs_plugin" / "pairs.jsonl").is_file()
    return target


def plugin_env(site: Path, tmp: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), str(site), os.environ.get("PYTHONPATH")]))
    return offline_env(tmp, PYTHONPATH=path)


def test_recipes_lists_plugins_and_the_cli_uses_their_adapter(site, tmp_path):
    code = textwrap.dedent("""
        import json
        from dpo_hub.cli.main import main
        from dpo_hub.cli.launch import recipe_from_argv, run_recipe
        from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
        main(["recipes"])
        recipe = recipe_from_argv(RECIPE, ["--data.kind", "theirs", "--data.prefix", "Question: ", \
"--data.seed", "7"])
        print("DATA " + json.dumps({"type": type(recipe.data).__name__, **recipe.to_dict()["data"]}))
        print("CODE", run_recipe(RECIPE, ["--data.kind", "nope"]))
    """)
    proc = run([sys.executable, "-c", code], plugin_env(site, tmp_path))
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert "  gpt2_ultrafeedback  GPT-2 x UltraFeedback" in out
    assert "      accelerate launch -m dpo_hub.recipes.gpt2_ultrafeedback" in out
    assert (
        "  theirs_recipe  Their recipe: DPO on their question/good/bad pairs. [theirs-plugin 0.1]\n"
        "      accelerate launch -m theirs_plugin.recipe"
    ) in out
    assert "Data adapters (data.kind): ultrafeedback, hh_rlhf, preferences, theirs [theirs-plugin 0.1]" in out
    data = json.loads(next(line for line in out.splitlines() if line.startswith("DATA "))[5:])
    assert data["type"] == "Theirs" and data["kind"] == "theirs" and data["prefix"] == "Question: "
    assert data["seed"] == 7 and data["dataset"].endswith("pairs.jsonl")
    # the broken plugin: skipped by name, with the reason, and never in the way of the commands above
    skipped = out.split("Skipped plugins:\n", 1)[1]
    for point, reason in [
        (
            "nope = no_such_module:Thing",
            "cannot be imported (ModuleNotFoundError: No module named 'no_such_module')",
        ),
        (
            "wrong = broken_plugin:NOT_A_CLASS",
            "it is 42, not a dataclass subclass of dpo_hub.data.adapters.Selection",
        ),
        (
            "preferences = broken_plugin:NOT_A_CLASS",
            "'preferences' is already taken by dpo_hub.data.adapters.Preferences",
        ),
        ("norecipe = broken_plugin", "module broken_plugin has no RECIPE that is a dpo_hub.Recipe"),
    ]:
        assert f"entry point '{point}'" in skipped and reason in skipped, (point, skipped)
    assert skipped.count("of distribution broken-plugin 0.1 was skipped") == 4
    assert (
        "error: command line: data.kind='nope' is unknown; use one of ['hh_rlhf', 'preferences', 'theirs', "
        "'ultrafeedback'] or mix (data.kind 'nope': entry point 'nope = no_such_module:Thing' (group "
        "dpo_hub.adapters) of distribution broken-plugin 0.1 was skipped: it cannot be imported" in err
    )
    assert "CODE 2" in out


def test_plugin_adapter_trains_from_yaml(site, tmp_path):
    config, output = tmp_path / "theirs.yaml", tmp_path / "run"
    config.write_text(
        "model: embedded\ndata:\n  kind: theirs\n  prefix: 'Question: '\n  limit: 40\ndpo:\n  max_steps: 2\n"
    )
    proc = run(
        [sys.executable, "-m", "dpo_hub", "train", "--config", str(config), "--output_dir", str(output)],
        plugin_env(site, tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics, recipe = read_metrics(output), (output / "recipe.yaml").read_text()
    assert metrics["data"]["dropped"] == {"theirs: good equals bad": len(SAME)}, (
        "the plugin's own rows and rule"
    )
    assert metrics["data"]["train_pairs"] + metrics["data"]["eval_pairs"] == ROWS - len(SAME)
    assert metrics["data"]["train_pairs"] > 0 and metrics["data"]["eval_pairs"] > 0
    assert "\n  kind: theirs  # one of ultrafeedback, hh_rlhf, preferences, theirs, mix\n" in recipe
    assert '\n  prefix: "Question: "  # Put before each question.\n' in recipe
    assert "skipped" in proc.stdout + proc.stderr, "the broken plugin is reported, and the run still trains"
