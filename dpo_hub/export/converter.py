"""llama.cpp's own GGUF converters, fetched from PyPI into the cache, run in a subprocess.

The ``llama-cpp-python`` sdist (pinned: ``LLAMA_CPP_PYTHON``) vendors llama.cpp. ``converter_dir()``
downloads it once (``pip download``) into ``cache_dir()`` and extracts only ``convert_hf_to_gguf.py``,
``convert_lora_to_gguf.py``, their ``conversion`` package, llama.cpp's ``gguf-py`` and its licence; nothing
is vendored into dpo_hub. The scripts put their own ``gguf-py`` first on ``sys.path``, so the installed
``gguf`` package does not decide how the file is written. The sdist stays in the cache for the llama.cpp
build (``dpo_hub.export.llama_cpp``).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from dpo_hub.errors import ExportError, SourceUnavailableError
from dpo_hub.runtime import cache_dir
from dpo_hub.sources.standins import pip_download

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python release whose llama.cpp converts and runs the GGUF
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")  # the converter's types that verification checks
MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE", "conversion/", "gguf-py/")
SUPPORTED_FILE = "supported_architectures.json"  # written last: the converter folder is complete


def sdist() -> Path:
    """The llama-cpp-python sdist in the cache (downloaded once with pip)."""
    folder = cache_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        try:
            file = pip_download(f"llama-cpp-python=={LLAMA_CPP_PYTHON}", Path(tmp), binary=False)
        except SourceUnavailableError as err:
            raise ExportError(
                f"llama.cpp's converter could not be fetched: {err}. It comes from PyPI "
                f"(llama-cpp-python=={LLAMA_CPP_PYTHON} sdist) into {folder}; put that file there by hand "
                "on a machine without PyPI access."
            ) from err
        return Path(shutil.move(file, folder / file.name))


def converter_dir() -> Path:
    """The folder holding llama.cpp's converter scripts, extracted from the sdist once."""
    folder = cache_dir() / f"llama.cpp-convert-{LLAMA_CPP_PYTHON}"
    if (folder / SUPPORTED_FILE).is_file():
        return folder
    archive_path = sdist()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive_path) as archive:
        for member in archive.getmembers():
            inner = (
                member.name.split("/vendor/llama.cpp/", 1)[-1] if "/vendor/llama.cpp/" in member.name else ""
            )
            if member.isfile() and inner.startswith(MEMBERS) and "/tests/" not in inner:
                target = staging / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    if not (staging / "convert_hf_to_gguf.py").is_file():
        raise ExportError(f"{archive_path}: no vendor/llama.cpp/convert_hf_to_gguf.py inside; delete it")
    supported = _run(staging, "convert_hf_to_gguf.py", ["--print-supported-models"], "list its models")
    names = _text_models(supported)
    (staging / SUPPORTED_FILE).write_text(json.dumps(names, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def _text_models(listing: str) -> list[str]:
    """The ``TEXT models:`` section of ``--print-supported-models`` (logged as ``  - Name`` lines)."""
    names, section = [], ""
    for line in listing.splitlines():
        text = line.split(":", 2)[-1] if line.startswith(("INFO:", "WARNING:")) else line
        if text.strip().endswith("models:"):
            section = text.strip()
        elif section == "TEXT models:" and text.strip().startswith("- "):
            names.append(text.strip()[2:].strip())
    return sorted(set(names))


def supported_architectures() -> list[str]:
    """The transformers architectures (``config.json``'s ``architectures``) the converter writes."""
    return json.loads((converter_dir() / SUPPORTED_FILE).read_text(encoding="utf-8"))


def check_architecture(model_dir: Path, label: str) -> str:
    """The model's architecture, or ``ExportError`` when llama.cpp's converter does not support it."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in supported_architectures():
        raise ExportError(
            f"{label}: architecture {architecture} is not supported by llama.cpp's converter "
            f"(llama-cpp-python {LLAMA_CPP_PYTHON}); nothing was written. GGUF export needs one of the "
            f"architectures it lists (python {converter_dir() / 'convert_hf_to_gguf.py'} "
            "--print-supported-models), e.g. LlamaForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel."
        )
    return architecture


def converter_input(model_dir: Path, folder: Path) -> Path:
    """``model_dir`` as the converter reads it: links to its files, and a ``config.json`` with the key
    names the converter expects (transformers 5 no longer writes GPT-2's ``n_ctx``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name != "config.json":
            os.symlink(path.absolute(), folder / path.name)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "gpt2" and "n_ctx" not in config:
        config["n_ctx"] = config["n_positions"]
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def lora_input(adapter_dir: Path, model_type: str, folder: Path) -> Path:
    """The adapter as ``convert_lora_to_gguf.py`` reads it. For GPT-2's Conv1D layers (peft's
    ``fan_in_fan_out``) the converter transposes the LoRA product as it transposes the weight, though peft
    stores A and B in Linear orientation already; so A and B are given as the transposed product (B^T, A^T),
    which the converter's transpose turns back. Without this the GGUF LoRA has the wrong shapes."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    transposed = model_type == "gpt2" and config.get("fan_in_fan_out")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not transposed:
            os.symlink((adapter_dir / name).absolute(), folder / name)
    if transposed:
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        tensors = load_file(adapter_dir / "adapter_model.safetensors")
        out: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if ".lora_A." in key:
                out[key] = tensors[key.replace(".lora_A.", ".lora_B.")].T.contiguous()
            elif ".lora_B." in key:
                out[key] = tensors[key.replace(".lora_B.", ".lora_A.")].T.contiguous()
            else:
                out[key] = value
        save_file(out, folder / "adapter_model.safetensors")
    return folder


def gguf_module():
    """The installed ``gguf`` package (the extra ``dpo-hub[gguf]``): transformers reads GGUF files with it."""
    try:
        return importlib.import_module("gguf")
    except ImportError as err:
        raise ExportError(
            f"GGUF export reads the files it writes with the gguf package ({err}); "
            "pip install 'dpo-hub[gguf]'"
        ) from err


def check_lora_shapes(lora_file: Path, model_file: Path) -> None:
    """Each LoRA pair of ``lora_file`` fits its tensor in ``model_file`` (what llama.cpp checks on load)."""
    reader = gguf_module().GGUFReader
    model = {t.name: [int(n) for n in t.shape] for t in reader(model_file).tensors}
    lora = {t.name: [int(n) for n in t.shape] for t in reader(lora_file).tensors}
    for name, a_shape in lora.items():
        if not name.endswith(".lora_a"):
            continue
        target = name.removesuffix(".lora_a")
        b_shape = lora.get(target + ".lora_b")
        want = model.get(target)
        if want is None or b_shape is None or a_shape[0] != want[0] or b_shape[1] != want[1]:
            raise ExportError(
                f"{lora_file.name}: the LoRA for {target} has shapes A {a_shape}, B {b_shape}, which do not "
                f"fit the model's {want}; llama.cpp would refuse it, so the export was not kept"
            )


def convert_model(model_dir: Path, out_file: Path, gguf_type: str) -> Path:
    """``convert_hf_to_gguf.py`` on a transformers folder -> ``out_file`` of ``gguf_type``."""
    args = [str(model_dir), "--outtype", gguf_type, "--outfile", str(out_file)]
    _run(converter_dir(), "convert_hf_to_gguf.py", args, f"convert {model_dir.name} to {gguf_type}")
    return out_file


def convert_lora(adapter_dir: Path, base_config_dir: Path, out_file: Path, gguf_type: str) -> Path:
    """``convert_lora_to_gguf.py``: the PEFT adapter alone as a GGUF LoRA (its base's config from
    ``base_config_dir``)."""
    args = [
        str(adapter_dir),
        "--base",
        str(base_config_dir),
        "--outtype",
        gguf_type,
        "--outfile",
        str(out_file),
    ]
    _run(converter_dir(), "convert_lora_to_gguf.py", args, f"convert the adapter to a {gguf_type} GGUF LoRA")
    return out_file


def _run(folder: Path, script: str, args: list[str], what: str) -> str:
    """Run one converter script offline; what it printed, or ``ExportError`` with its last lines."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the scripts must use their own gguf-py
    result = subprocess.run(
        [sys.executable, str(folder / script), *args], cwd=folder, env=env, capture_output=True, text=True
    )
    if result.returncode == 0:
        return result.stdout + result.stderr
    tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
    if "No space left on device" in tail or f"[Errno {errno.ENOSPC}]" in tail:
        raise OSError(errno.ENOSPC, f"No space left on device while llama.cpp's converter ran ({what})")
    missing = re.search(r"No module named '([\w.]+)'", tail)
    if missing:
        package = {"sentencepiece": "sentencepiece", "mistral_common": "mistral-common"}.get(
            missing.group(1).split(".")[0], missing.group(1).split(".")[0]
        )
        raise ExportError(
            f"llama.cpp's {script} needs the Python package {package} to {what}; pip install {package} "
            "(sentencepiece comes with dpo-hub[gguf]); nothing was written"
        )
    raise ExportError(f"llama.cpp's {script} could not {what} (exit {result.returncode}):\n{tail}")
