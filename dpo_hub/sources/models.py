"""Where models, tokenizers, adapters and datasets come from: the Hub, a local path, or the embedded default.

``"auto"`` means the real thing from the Hub when it can be had (or is cached) and the embedded
default otherwise. Any other name is taken literally: if it cannot be fetched, that is an error,
never silently replaced. ``load_adapter_model`` is the one loader of "base model + LoRA adapter".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dpo_hub import embedded
from dpo_hub.config.model import ModelSpec, as_spec
from dpo_hub.errors import SourceUnavailableError
from dpo_hub.sources import standins

AUTO = "auto"
DEFAULT_MODEL = "gpt2"
DEFAULT_DATASET = "argilla/ultrafeedback-binarized-preferences-cleaned"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TRUTHFULQA = "truthfulqa/truthful_qa"
# what "auto" means per recipe: (model, dataset) from the Hub; each falls back to FALLBACKS' stand-in
AUTO_BY_RECIPE = {"smollm2_truthfulqa": (SMOLLM2, TRUTHFULQA)}
log = logging.getLogger("dpo_hub")


def hub_has(repo_id: str, repo_type: str = "model") -> tuple[bool, str]:
    """Whether ``repo_id`` can be fetched (or is in the local cache), with the reason when not."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    if isinstance(try_to_load_from_cache(repo_id, probe, repo_type=repo_type), str):
        return True, "cached"
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=10)
        return True, "reachable"
    except Exception as err:  # offline mode, DNS failure, timeout, 404: all mean "cannot be had"
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")


def resolve(name: str, default: str, repo_type: str) -> tuple[str, str | None]:
    """Turn ``"auto"`` into ``default`` (from the Hub) or its stand-in; return (name, note on a fallback or
    None).

    Stand-ins: gpt2 and UltraFeedback -> ``embedded``; SmolLM2 -> its PyPI GGUF, de-quantised; TruthfulQA ->
    the bigbench copy. TruthfulQA from the Hub is rewritten as a local pairs file too.
    """
    if name != AUTO:
        return name, None
    ok, why = hub_has(default, repo_type)
    if default == TRUTHFULQA:
        return (
            (str(standins.truthfulqa_pairs(from_hub=True)), None)
            if ok
            else (
                str(standins.truthfulqa_pairs()),
                f"{default} unavailable ({why}); using {standins.TRUTHFULQA_NOTE}",
            )
        )
    if ok:
        return default, None
    if default == SMOLLM2:
        return str(standins.smollm2_folder()), f"{default} unavailable ({why}); using {standins.SMOLLM2_NOTE}"
    return embedded.EMBEDDED, f"{default} unavailable ({why})"


def auto_defaults(recipe_name: str) -> tuple[str, str]:
    """(model, dataset) that ``auto`` stands for in the recipe named ``recipe_name``."""
    return AUTO_BY_RECIPE.get(recipe_name, (DEFAULT_MODEL, DEFAULT_DATASET))


def is_local(name: str) -> bool:
    return os.path.exists(name) or Path(name).suffix in {".json", ".jsonl", ".csv", ".parquet"}


def load_tokenizer(model: str | ModelSpec):
    """Tokenizer for ``model`` (Hub id, local folder, .gguf file or ``embedded``), with a pad token."""
    spec = as_spec(model)
    if spec.name == embedded.EMBEDDED:
        return embedded.load_tokenizer()
    from transformers import AutoTokenizer

    where, gguf_file = spec.location()
    extra = {k: v for k, v in (("revision", spec.revision), ("gguf_file", gguf_file)) if v is not None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **extra)
    except OSError as err:
        if spec.name == embedded.EMBEDDED_MODEL_ID:
            return embedded.load_tokenizer()
        raise _unavailable(spec.name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: str | ModelSpec, dtype=None, token: str | None = None):
    """Causal LM for ``model`` (a name or a ``ModelSpec``); safetensors or GGUF only and never remote code.

    ``embedded`` (and its Hub id, when the Hub does not have it) is the seeded tiny GPT-2, rebuilt
    locally with the same weights every time. A GGUF model is de-quantised into a plain float model.
    """
    spec = as_spec(model)
    if spec.name == embedded.EMBEDDED and spec.quantization is None:
        return embedded.build_model()
    from transformers import AutoModelForCausalLM

    where, gguf_file = spec.location()
    if spec.name == embedded.EMBEDDED:  # quantized: bitsandbytes quantizes it as it loads, like any model
        where = str(_embedded_folder())
    kwargs = {"dtype": dtype, **spec.load_kwargs()}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    try:
        loaded = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=False, token=token, **kwargs)
    except OSError as err:
        if spec.name == embedded.EMBEDDED_MODEL_ID:
            return embedded.build_model()
        raise _unavailable(spec.name, err) from err
    if gguf_file:
        standins.forget_quantizer(loaded)  # de-quantised weights: let it save and train as a plain model
    return loaded


def _embedded_folder() -> Path:
    """The embedded model saved once under the cache (``from_pretrained`` applies quantization and dtype)."""
    import tempfile

    from dpo_hub.runtime import cache_dir

    folder = cache_dir() / "embedded_model" / f"seed{embedded.MODEL_SEED}"
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:  # complete or absent, even with 2 ranks
            embedded.build_model().save_pretrained(tmp)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process saved it first
                pass
            Path(tmp).mkdir(exist_ok=True)  # TemporaryDirectory removes it again
    return folder


def load_adapter_model(
    folder: str | Path, base: str | ModelSpec | None = None, token: str | None = None, trainable: bool = False
):
    """The LoRA adapter saved in ``folder`` on its base model (``base``, else the one its config names).

    Safetensors only, never remote code; in eval mode unless ``trainable``.
    """
    from peft import PeftConfig, PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise SourceUnavailableError(f"{folder}: no adapter_config.json; not a LoRA adapter folder")
    base = base or PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    model = PeftModel.from_pretrained(load_model(base, token=token), str(folder), is_trainable=trainable)
    return model if trainable else model.eval()


def _unavailable(name: str, err: Exception) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"model {name!r} could not be loaded ({str(err).splitlines()[0]}). Check the name and your network, "
        "or use --model auto (the embedded default when offline) or --model embedded."
    )
