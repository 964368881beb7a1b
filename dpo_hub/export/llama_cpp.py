"""llama.cpp itself, to run an exported GGUF: llama-cpp-python built from the converter's pinned sdist.

``runtime_dir()`` compiles the sdist once (``pip install --target`` into ``cache_dir()``, never into the
environment dpo_hub runs in; minutes on a few cores) and needs a C/C++ compiler and cmake.
``greedy_tokens`` runs a GGUF (optionally with a GGUF LoRA) in a subprocess that imports that build and
returns the greedy continuation of each prompt as token ids.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dpo_hub.errors import ExportError
from dpo_hub.export.converter import LLAMA_CPP_PYTHON, sdist
from dpo_hub.runtime import cache_dir, missing_on_path

BUILT_FILE = "dpo_hub_build.json"  # written last: the build is complete (with its wall time)
CMAKE_ARGS = (  # only the library the Python bindings load: no tools, tests, examples, server or llava
    "-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF "
    "-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
)
RUNNER = """
import json, sys
from llama_cpp import Llama
job = json.loads(sys.argv[1])
llm = Llama(model_path=job["model"], lora_path=job["lora"], n_ctx=256, n_threads=job["threads"], seed=0,
            verbose=True, logits_all=False)
out = []
for prompt in job["prompts"]:
    llm.reset()
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=job["add_bos"], special=True)
    ids = []
    for token in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
        if token == llm.token_eos() or len(ids) == job["n"]:
            break
        ids.append(token)
    out.append({"prompt_ids": tokens, "ids": ids})
print("RESULT " + json.dumps(out))
"""


def missing_build_tools() -> list[str]:
    """The build tools llama.cpp needs that are not on ``PATH``."""
    return missing_on_path(os.environ.get("CC") or "cc", os.environ.get("CXX") or "c++", "cmake")


def runtime_dir(jobs: int = 2) -> Path:
    """The compiled llama-cpp-python in the cache (built once with ``jobs`` parallel compiles)."""
    folder = cache_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}" / "runtime"
    if (folder / BUILT_FILE).is_file():
        return folder
    missing = missing_build_tools()
    if missing:
        raise ExportError(
            f"running a GGUF in llama.cpp needs llama-cpp-python {LLAMA_CPP_PYTHON} compiled from source, "
            "and "
            f"{', '.join(missing)} is not on PATH; install a C/C++ compiler and cmake (e.g. apt-get install "
            "build-essential cmake), or set CC/CXX. The export itself does not need them."
        )
    staging = folder.with_name("runtime.partial")
    shutil.rmtree(staging, ignore_errors=True)
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs)}
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-cache-dir",
        "--target",
        str(staging),
    ]
    result = subprocess.run(
        [*command, str(sdist()), "diskcache>=5.6.1"], env=env, capture_output=True, text=True
    )
    if result.returncode:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ExportError(f"building llama-cpp-python {LLAMA_CPP_PYTHON} from its sdist failed:\n{tail}")
    took = round(time.monotonic() - started, 1)
    (staging / BUILT_FILE).write_text(json.dumps({"seconds": took, "cmake_args": CMAKE_ARGS, "jobs": jobs}))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def build_seconds() -> float:
    """The wall time of the cached build."""
    return json.loads((runtime_dir() / BUILT_FILE).read_text())["seconds"]


def greedy_tokens(
    model: Path,
    prompts: list[str],
    n: int,
    lora: Path | None = None,
    add_bos: bool = False,
    threads: int = 1,
) -> list[dict[str, list[int]]]:
    """llama.cpp's greedy continuation (``n`` tokens, stopping at eos) of each prompt: ``prompt_ids``
    (llama.cpp's tokenization) and ``ids``."""
    job = {
        "model": str(model),
        "lora": str(lora) if lora else None,
        "prompts": prompts,
        "n": n,
        "add_bos": add_bos,
        "threads": threads,
    }
    env = {**os.environ, "PYTHONPATH": str(runtime_dir())}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(job)], env=env, capture_output=True, text=True
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    refused = [x for x in result.stderr.splitlines() if "failed to apply lora adapter" in x]
    if refused:  # llama-cpp-python 0.3.36 goes on with the refused adapter and crashes
        raise ExportError(f"llama.cpp refused the LoRA {lora}: {refused[0].split(': ', 1)[-1]}")
    if result.returncode or line is None:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ExportError(f"llama.cpp could not run {model.name} (exit {result.returncode}):\n{tail}")
    return json.loads(line.removeprefix("RESULT "))
