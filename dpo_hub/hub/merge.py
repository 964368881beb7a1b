"""A run's LoRA adapter merged into its base model: a standalone model folder that transformers loads alone.

``merge_adapter`` opens the run (folder or Hub repo) with the one base + adapter loader, merges in
float32 (peft handles GPT-2's Conv1D ``fan_in_fan_out``), casts to the dtype asked (default: the base's),
and writes safetensors, tokenizer, a generation config holding the recipe's generation settings,
``merge.json`` (provenance) and a card whose ``base_model_relation`` is ``merge``; the folder appears
only when complete. ``push_merged`` publishes it in one commit with the adapter push machinery.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from dpo_hub.artifacts.folders import check_writable, finalize, fresh_staging, write_json
from dpo_hub.errors import MergeError, OutputError
from dpo_hub.hub.card import base_model_id, dataset_id, model_license
from dpo_hub.hub.runs import Run, open_run
from dpo_hub.hub.transfer import push_files

DTYPES = ("float32", "bfloat16", "float16")
MARKER = "merge.json"  # written last: the folder is a finished merge
SAFE_SUFFIXES = (".safetensors", ".json", ".txt", ".jinja", ".model")
TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

[`{{ base_model }}`](https://huggingface.co/{{ base_model }}) with a DPO-trained LoRA adapter merged into its
weights: {{ adapter }}. A standalone {{ dtype }} model: transformers loads it without peft.
{% if recipe %}
The adapter was trained by the dpo_hub recipe `{{ recipe }}` (fingerprint `{{ fingerprint }}`) \
on `{{ dataset }}`.
{% endif %}
## Use it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{{ where }}")
tokenizer = AutoTokenizer.from_pretrained("{{ where }}")
```

`generation_config.json` holds the generation settings the run compared base and tuned with.

## Framework versions

{% for lib, version in versions %}- {{ lib }} {{ version }}
{% endfor %}"""


def merge_adapter(
    source: str | Path,
    output_dir: str | Path,
    dtype: Any = None,
    revision: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge the adapter of ``source`` (run folder, or Hub repo at ``revision``) into its base; write
    ``output_dir``.

    ``dtype``: float32, bfloat16 or float16 (or a ``torch.dtype``); None keeps the base model's. An existing
    ``output_dir`` is replaced only with ``overwrite``, and only once the new folder is complete.
    """
    import torch

    target = _dtype(dtype)
    output_dir = Path(output_dir).expanduser().absolute()
    local = Path(source).expanduser().is_dir()
    if local and revision:
        raise MergeError(f"{source} is a local folder; --revision applies to a Hub repo only")
    if local and Path(source).expanduser().resolve() in (output_dir.resolve(), *output_dir.resolve().parents):
        raise OutputError(
            f"output {output_dir} would replace the run folder {source} itself; choose another --output"
        )
    check_writable(output_dir, overwrite, "--output", "--overwrite", MARKER, "merge")
    run = open_run(Path(source).expanduser() if local else source, revision, token)
    loaded = next(run.model.parameters()).dtype
    merged = run.model.to(torch.float32).merge_and_unload().to(target or loaded).eval()
    _generation_settings(merged, run)
    info = _provenance(run, local, revision, str(target or loaded).removeprefix("torch."))
    stage = fresh_staging(output_dir)
    try:
        merged.save_pretrained(stage)
        run.tokenizer.save_pretrained(stage)
        (stage / "README.md").write_text(str(merged_card(info)), encoding="utf-8")
        write_json(stage / MARKER, info)
        _readable(stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return finalize(stage, output_dir, MARKER)


def push_merged(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Publish the merged model in ``folder`` to ``repo_id`` in one commit (its card names the repo); the
    commit URL."""
    folder = Path(folder)
    if not (folder / MARKER).is_file():
        raise MergeError(f"{folder} is not a finished merge ({MARKER} is missing); run dpo-hub merge first")
    info = json.loads((folder / MARKER).read_text(encoding="utf-8"))

    def files_for(repo: str) -> dict[str, bytes | Path]:
        files: dict[str, bytes | Path] = {
            p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(SAFE_SUFFIXES)
        }
        files["README.md"] = str(merged_card(info, repo)).encode("utf-8")
        return files

    return push_files(
        files_for,
        repo_id,
        private,
        revision,
        token,
        message=f"dpo_hub merge: {info['adapter']} into {info['base_model']}",
        description=f"{info['base_model']} with the LoRA adapter {info['adapter']} merged in "
        f"({info['dtype']}).",
    )


def merged_card(info: dict[str, Any], repo_id: str | None = None) -> ModelCard:
    """The card of a merged model: ``base_model`` is the base, ``base_model_relation: merge``."""
    base = info["base_model"]
    hub = info.get("adapter_on_hub")
    adapter = (
        (
            f"[`{info['adapter']}`](https://huggingface.co/{info['adapter']})"
            + (f" at revision `{info['revision']}`" if info.get("revision") else "")
        )
        if hub
        else f"the adapter of the run folder `{info['adapter']}`"
    )
    data = ModelCardData(
        base_model=base,
        base_model_relation="merge",
        library_name="transformers",
        pipeline_tag="text-generation",
        license=info.get("license") or model_license(base),
        datasets=[info["dataset"]] if info.get("dataset") else None,
        tags=["dpo", "lora", "merge", "trl", "dpo-hub"],
        model_name=repo_id,
    )
    name = repo_id or info["adapter"].rstrip("/").split("/")[-1] + "-merged"
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        title=name.split("/")[-1],
        base_model=base,
        adapter=adapter,
        dtype=info["dtype"],
        recipe=info.get("recipe"),
        fingerprint=info.get("fingerprint"),
        dataset=info.get("dataset"),
        where=repo_id or "PATH/TO/THIS/FOLDER",
        versions=sorted(info.get("versions", {}).items()),
    )


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype) and str(dtype).removeprefix("torch.") in DTYPES:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return getattr(torch, dtype)
    raise MergeError(
        f"dtype {dtype!r} cannot be written; use one of {', '.join(DTYPES)} (or leave it out: the base's)"
    )


def _readable(folder: Path) -> None:
    """Every file with the mode a new file gets here (safetensors writes its weights owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)


def _generation_settings(model: Any, run: Run) -> None:
    """The run's generation preset and the tokenizer's pad/eos tokens as the model's generation defaults."""
    config = model.generation_config
    config.pad_token_id, config.eos_token_id = run.tokenizer.pad_token_id, run.tokenizer.eos_token_id
    if run.recipe is not None:
        settings = run.recipe.generation
        config.max_new_tokens, config.do_sample = settings.max_new_tokens, settings.do_sample
        if settings.do_sample:
            config.temperature, config.top_k, config.top_p = (
                settings.temperature,
                settings.top_k,
                settings.top_p,
            )


def _provenance(run: Run, local: bool, revision: str | None, dtype: str) -> dict[str, Any]:
    """What ``merge.json`` and the card record: the adapter, its base, the recipe and the library versions."""
    base = base_model_id(run.model.peft_config["default"].base_model_name_or_path)
    recipe = run.recipe
    return {
        "adapter": run.folder.name if local else run.source.split("@")[0],  # the card's name for it
        "adapter_source": str(Path(run.folder).resolve()) if local else run.source.split("@")[0],  # in full
        "adapter_on_hub": not local,
        "revision": revision,
        "base_model": base,
        "dtype": dtype,
        "recipe": recipe.name if recipe else None,
        "fingerprint": recipe.fingerprint() if recipe else None,
        "dataset": dataset_id(recipe.data.dataset) if recipe else None,
        "versions": {lib: version(lib) for lib in ("dpo_hub", "peft", "torch", "transformers")},
    }
