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
from dpo_hub.errors import SourceUnavailableError

AUTO = "auto"
DEFAULT_MODEL = "gpt2"
DEFAULT_DATASET = "argilla/ultrafeedback-binarized-preferences-cleaned"
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
    """Turn ``"auto"`` into ``default`` or ``"embedded"``; return (name, reason it fell back or None)."""
    if name != AUTO:
        return name, None
    ok, why = hub_has(default, repo_type)
    return (default, None) if ok else (embedded.EMBEDDED, f"{default} unavailable ({why})")


def is_local(name: str) -> bool:
    return os.path.exists(name) or Path(name).suffix in {".json", ".jsonl", ".csv", ".parquet"}


def load_tokenizer(name: str):
    """Tokenizer for ``name`` (Hub id, local folder or ``embedded``), with a pad token."""
    if name == embedded.EMBEDDED:
        return embedded.load_tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except OSError as err:
        if name == embedded.EMBEDDED_MODEL_ID:
            return embedded.load_tokenizer()
        raise _unavailable(name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype=None, token: str | None = None):
    """Causal LM for ``name``; safetensors only and never remote code.

    ``embedded`` (and its Hub id, when the Hub does not have it) is the seeded tiny GPT-2, rebuilt
    locally with the same weights every time.
    """
    if name == embedded.EMBEDDED:
        return embedded.build_model()
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=False, use_safetensors=True,
                                                    token=token)
    except OSError as err:
        if name == embedded.EMBEDDED_MODEL_ID:
            return embedded.build_model()
        raise _unavailable(name, err) from err


def load_adapter_model(folder: str | Path, base: str | None = None, token: str | None = None, trainable: bool = False):
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
