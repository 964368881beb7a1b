"""``export_gguf``: a run (folder or Hub repo) as GGUF files for llama.cpp, Ollama and LM Studio, verified.

Steps, all inside a staging folder beside ``output_dir`` that is renamed into place only when everything
passed: merge the adapter into its base (``merge_adapter``, float32), convert it with llama.cpp's own
``convert_hf_to_gguf.py`` (``model-TYPE.gguf``), convert the adapter alone with ``convert_lora_to_gguf.py``
(``adapter-TYPE.gguf``, for users who keep the base), check the GGUF against the merged model
(``verify_gguf``; a failure is an error), write an Ollama ``Modelfile``, the card and ``export.json``
(provenance + verification, written last). ``push_gguf`` publishes the folder with its card.
"""

from __future__ import annotations

import errno
import json
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from dpo_hub.artifacts.folders import check_writable, finalize, fresh_staging, sha256, write_json
from dpo_hub.errors import ExportError, OutputError
from dpo_hub.export import converter
from dpo_hub.export.modelfile import modelfile
from dpo_hub.export.verify import verify_gguf
from dpo_hub.hub.merge import MARKER as MERGE_MARKER
from dpo_hub.hub.merge import merge_adapter
from dpo_hub.hub.transfer import download_adapter, push_files
from dpo_hub.recipe import Recipe

MARKER = "export.json"  # written last: the folder is a finished, verified export
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

`{{ base_model }}` with a DPO-trained LoRA adapter ({{ adapter }}) merged in, as a **{{ gguf_type }}** GGUF
for llama.cpp, Ollama and LM Studio, written by llama.cpp's own converter (llama-cpp-python {{ llama_cpp }}).
{% if recipe %}The adapter was trained by the dpo_hub recipe `{{ recipe }}` (fingerprint `{{ fingerprint }}`).
{% endif %}
| file | what | size |
|---|---|---|
{% for f in files %}| `{{ f.name }}` | {{ f.what }} | {{ f.size }} |
{% endfor %}
## Run it

llama.cpp:

```bash
llama-cli -m {{ model_file }} -p "Is eating animals cruel?" -n 64
# or keep the base model and apply the adapter at load time:
llama-cli -m BASE_MODEL.gguf --lora {{ lora_file }} -p "Is eating animals cruel?" -n 64
```

Ollama (the `Modelfile` holds the chat template and the stop tokens):

```bash
ollama create {{ short_name }} -f Modelfile && ollama run {{ short_name }}
```

Python (`pip install llama-cpp-python`):

```python
from llama_cpp import Llama
llm = Llama(model_path="{{ model_file }}")
print(llm("Is eating animals cruel?", max_tokens=64)["choices"][0]["text"])
```

## Verification

The export loaded the GGUF back with transformers (de-quantised) and compared it with the merged model on
{{ check.prompts }} prompts ({{ check.positions }} positions), the log-probabilities of the merged model's top
{{ check.top_k }} next tokens at every position:

| figure | value |
|---|---|
| largest \\|log p(GGUF) - log p(merged)\\| | {{ "%.3g" % check.max_abs_logprob_diff }} nats \
(tolerance for {{ gguf_type }}: {{ check.tolerance }}) |
| mean \\|log p(GGUF) - log p(merged)\\| | {{ "%.3g" % check.mean_abs_logprob_diff }} nats |
| top-1 next token agrees | {{ "%.1f" % (100 * check.top1_agreement) }}% |
{% if comparison %}
## Base vs tuned (from the training run)

{{ comparison }}
{% endif %}
## Framework versions

{% for lib, v in versions %}- {{ lib }} {{ v }}
{% endfor %}"""


def export_gguf(
    source: str | Path,
    output_dir: str | Path,
    gguf_type: str = "f16",
    revision: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
    prompts: tuple[str, ...] | None = None,
) -> Path:
    """Export the run ``source`` (folder, or Hub repo at ``revision``) as ``gguf_type`` GGUF files into
    ``output_dir``, verified against the merged model; return ``output_dir``.

    ``gguf_type``: one of ``converter.GGUF_TYPES``. ``prompts``: what the check scores (default: a few
    fixed ones). An existing export in ``output_dir`` is replaced only with ``overwrite``, and only once the
    new one has passed its check; any other folder is never touched.
    """
    if gguf_type not in converter.GGUF_TYPES:
        raise ExportError(
            f"--gguf {gguf_type!r} is not a type dpo_hub exports and verifies; use one of "
            f"{', '.join(converter.GGUF_TYPES)}"
        )
    output_dir = Path(output_dir).expanduser().absolute()
    local = Path(source).expanduser().is_dir()
    if local and Path(source).expanduser().resolve() in (output_dir.resolve(), *output_dir.resolve().parents):
        raise OutputError(
            f"output {output_dir} would replace the run folder {source}; choose another --output"
        )
    check_writable(output_dir, overwrite, "--output", "--overwrite", MARKER, "GGUF export")
    adapter_dir = Path(source).expanduser() if local else download_adapter(str(source), revision, token)
    label = str(source) + (f"@{revision}" if revision else "")
    recipe = (
        Recipe.from_yaml(adapter_dir / "recipe.yaml") if (adapter_dir / "recipe.yaml").is_file() else None
    )
    _check_not_quantized(recipe, label)
    converter.gguf_module()  # checked, and the converter fetched, before anything is staged
    converter.converter_dir()
    stage = fresh_staging(output_dir)
    try:
        merged = merge_adapter(source, stage / "merged", "float32", revision, token)
        _check_merged(merged, label)
        _check_free_space(merged, stage, gguf_type)
        model_file = stage / f"model-{gguf_type}.gguf"
        lora_file = stage / f"adapter-{gguf_type}.gguf"
        inputs = converter.converter_input(merged, stage / "converter-input")
        converter.convert_model(inputs, model_file, gguf_type)
        model_type = json.loads((merged / "config.json").read_text(encoding="utf-8"))["model_type"]
        adapter = converter.lora_input(adapter_dir, model_type, stage / "converter-adapter")
        converter.convert_lora(adapter, inputs, lora_file, gguf_type)
        converter.check_lora_shapes(lora_file, model_file)
        check = verify_gguf(model_file, merged, gguf_type, prompts)
        tokenizer = _tokenizer(merged)
        (stage / "Modelfile").write_text(
            modelfile(model_file.name, tokenizer, recipe.generation if recipe else None), encoding="utf-8"
        )
        info = _provenance(merged, adapter_dir, gguf_type, check.as_dict(), [model_file, lora_file])
        shutil.rmtree(stage / "converter-input")
        shutil.rmtree(stage / "converter-adapter")
        shutil.rmtree(merged)
        (stage / "README.md").write_text(str(gguf_card(info)), encoding="utf-8")
        write_json(stage / MARKER, info)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        if _disk_full(err):
            raise ExportError(
                f"the disk holding {output_dir.parent} is full (export of {label} to {gguf_type}); the "
                "partial files were removed and nothing else changed. Free space or choose another --output."
            ) from err
        raise
    return finalize(stage, output_dir, MARKER)


def push_gguf(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Publish the finished export in ``folder`` to ``repo_id`` in one commit (its card names the repo);
    the commit URL."""
    folder = Path(folder)
    if not (folder / MARKER).is_file():
        raise ExportError(f"{folder} is not a finished GGUF export ({MARKER} is missing); run dpo-hub export")
    info = json.loads((folder / MARKER).read_text(encoding="utf-8"))

    def files_for(repo: str) -> dict[str, bytes | Path]:
        files: dict[str, bytes | Path] = {f["name"]: folder / f["name"] for f in info["files"]}
        files["Modelfile"] = folder / "Modelfile"
        files[MARKER] = folder / MARKER
        files["README.md"] = str(gguf_card(info, repo)).encode("utf-8")
        return files

    return push_files(
        files_for,
        repo_id,
        private,
        revision,
        token,
        message=f"dpo_hub export: {info['adapter']} as {info['gguf_type']} GGUF",
        description=f"{info['base_model']} with {info['adapter']} merged in, {info['gguf_type']} GGUF, "
        f"verified (max |d log p| {info['verification']['max_abs_logprob_diff']:.3g}).",
    )


def gguf_card(info: dict[str, Any], repo_id: str | None = None) -> ModelCard:
    """The card of an export: base model, type, sizes, how to run it, verification, the run's comparison."""
    base = info["base_model"]
    data = ModelCardData(
        base_model=base,
        library_name="gguf",
        pipeline_tag="text-generation",
        license=info.get("license"),
        tags=["gguf", "llama.cpp", "ollama", "dpo", "lora", "dpo-hub", info["gguf_type"]],
        model_name=repo_id,
    )
    name = (repo_id or f"{info['adapter'].rstrip('/').split('/')[-1]}-{info['gguf_type']}-gguf").split("/")[
        -1
    ]
    what = {"model": "the merged model", "lora": "the LoRA adapter alone (apply it to the base's GGUF)"}
    files = [
        {"name": f["name"], "what": what[f["kind"]], "size": _size(f["bytes"])} for f in info["files"]
    ] + [{"name": "Modelfile", "what": "Ollama: chat template and stop tokens", "size": ""}]
    model_file, lora_file = (f["name"] for f in info["files"])
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        title=name,
        base_model=base,
        adapter=f"`{info['adapter']}`",
        gguf_type=info["gguf_type"],
        llama_cpp=info["llama_cpp_python"],
        recipe=info.get("recipe"),
        fingerprint=info.get("fingerprint"),
        files=files,
        model_file=model_file,
        lora_file=lora_file,
        short_name=name.lower(),
        check=info["verification"],
        comparison=info.get("comparison"),
        versions=sorted(info.get("versions", {}).items()),
    )


def _check_not_quantized(recipe: Recipe | None, label: str) -> None:
    """A run trained on a 4/8-bit base would merge into quantised weights: refuse, saying how to proceed."""
    if recipe is not None and recipe.model.quantization is not None:
        raise ExportError(
            f"{label} was trained on a {recipe.model.quantization} base (model.quantization="
            f"{recipe.model.quantization}); GGUF export merges into full-precision weights. Dequantise "
            "first: "
            "in a copy of the run folder set model.quantization to null in recipe.yaml (the base then loads "
            "in full precision) and export that copy; nothing was written."
        )


def _check_merged(merged: Path, label: str) -> None:
    """A base stored quantised (GPTQ, AWQ, bitsandbytes on the Hub) cannot be converted as it is."""
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method:
        raise ExportError(
            f"{label}: its base model is stored quantised ({method}); llama.cpp's converter needs "
            "full-precision weights. Dequantise the base first (load it in transformers and save_pretrained "
            "a float16/float32 copy), train or merge against that copy, then export; nothing was written."
        )
    converter.check_architecture(merged, label)


def _disk_full(err: BaseException) -> bool:
    """An error that means the disk is full (safetensors and the converter report it in their own types)."""
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


def _check_free_space(merged: Path, stage: Path, gguf_type: str) -> None:
    """Room for the model GGUF (from the merged float32 weights' size), else a disk-full error up front."""
    weights = sum(p.stat().st_size for p in merged.glob("*.safetensors"))
    needed = int(weights / 4 * BYTES_PER_WEIGHT[gguf_type] * 1.1)
    free = shutil.disk_usage(stage).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"{_size(needed)} needed, {_size(free)} free")


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _provenance(
    merged: Path, adapter_dir: Path, gguf_type: str, check: dict[str, Any], files: list[Path]
) -> dict[str, Any]:
    info = json.loads((merged / MERGE_MARKER).read_text(encoding="utf-8"))
    comparison = adapter_dir / "comparison.md"
    return {
        "adapter": info["adapter"],
        "adapter_on_hub": info["adapter_on_hub"],
        "revision": info["revision"],
        "base_model": info["base_model"],
        "recipe": info["recipe"],
        "fingerprint": info["fingerprint"],
        "gguf_type": gguf_type,
        "llama_cpp_python": converter.LLAMA_CPP_PYTHON,
        "files": [
            {"name": f.name, "kind": kind, "bytes": f.stat().st_size, "sha256": sha256(f)}
            for f, kind in zip(files, ("model", "lora"))
        ],
        "verification": check,
        "comparison": _table(comparison.read_text(encoding="utf-8")) if comparison.is_file() else None,
        "versions": {**info["versions"], "gguf (installed)": version("gguf")},
    }


def _table(markdown: str) -> str | None:
    """The first table of ``comparison.md`` and its title line (without the plot and the generations)."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
    return "\n".join(([title, ""] if title else []) + lines[start:end])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
