"""The embedded default: what a recipe runs on when the Hub cannot be reached.

- GPT-2's real tokenizer (``gpt2_tokenizer/``, MIT, see its LICENSE): "Hello world" -> [15496, 995].
- A GPT-2-architecture model built from a small ``GPT2Config`` with a seeded init. It is NOT GPT-2:
  no GPT-2 weights can be downloaded offline, so it starts from random weights. With the full
  50,257-token vocabulary the output layer dominates its cost, hence 2 layers, 64 wide.
- ``sample.jsonl``: 400 preference pairs in UltraFeedback-binarized schema, written by the dpo_hub
  authors (see ``make_sample.py`` for provenance and how to regenerate it).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
TOKENIZER_DIR = HERE / "gpt2_tokenizer"
SAMPLE_PATH = HERE / "sample.jsonl"
EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "dpo-hub/tiny-gpt2-embedded"
EMBEDDED_DATASET_ID = "dpo-hub/ultrafeedback-sample"
MODEL_SEED = 1234
MODEL_SHAPE = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 1024}  # wider/deeper: slower on CPU


def load_tokenizer():
    """GPT-2's tokenizer from the files shipped in the package (pad token = EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model():
    """The tiny GPT-2-architecture model; the same weights on every call and machine (seeded init)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50257, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256, **MODEL_SHAPE
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODEL_SEED)
        model = GPT2LMHeadModel(config)
    model.config.name_or_path = EMBEDDED_MODEL_ID
    model.name_or_path = EMBEDDED_MODEL_ID
    model.generation_config.pad_token_id = 50256
    return model.eval()  # like from_pretrained


def hub_seed() -> list[tuple[str, str, dict[str, bytes]]]:
    """Repos a local test Hub hosts with ``--seed``: the tiny model and the preference sample."""
    import tempfile

    model_files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        build_model().save_pretrained(tmp)
        load_tokenizer().save_pretrained(tmp)
        for path in Path(tmp).iterdir():
            model_files[path.name] = path.read_bytes()
    model_files["README.md"] = _card(
        "Tiny GPT-2-architecture model with random (seeded) weights; dpo_hub's offline default."
    )
    dataset_files = {
        "data/train.jsonl": SAMPLE_PATH.read_bytes(),
        "README.md": _card(
            "400 preference pairs in UltraFeedback-binarized schema, written by the dpo_hub authors."
        ),
    }
    return [("model", EMBEDDED_MODEL_ID, model_files), ("dataset", EMBEDDED_DATASET_ID, dataset_files)]


def _card(text: str) -> bytes:
    return f"---\nlicense: mit\ntags:\n- dpo-hub\n---\n\n{text}\n".encode()


def sample_rows() -> list[dict]:
    """The bundled preference sample as a list of rows."""
    return [json.loads(line) for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]
