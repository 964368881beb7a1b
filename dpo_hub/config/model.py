"""``ModelSpec``: which model a recipe loads and how (the ``model:`` group of a recipe).

A plain name is still a whole spec: ``model: gpt2`` in YAML and ``--model gpt2`` on the command line
set ``model.name``; ``--model.dtype bfloat16`` and the other keys refine it. A spec with only a name
compares equal to that name. ``load_kwargs`` turns it into ``from_pretrained`` arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_hub.errors import RecipeError

QUANTIZATIONS = ("4bit", "8bit")


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """The base model and its loading settings (passed to ``AutoModelForCausalLM.from_pretrained``)."""

    name: str = field(
        default="auto",
        metadata={
            "help": "Hub id, folder or .gguf file; auto: the recipe's default "
            "model from the Hub, else its offline stand-in."
        },
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub model; null: main."}
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype: a torch name (float32, bfloat16, float16) "
            "or auto (the checkpoint's); null: float32."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel transformers uses (eager, sdpa, flash_attention_2, ...); "
            "null: transformers' choice."
        },
    )
    quantization: str | None = field(
        default=None,
        metadata={
            "help": "4bit (NF4) or 8bit weights with bitsandbytes (QLoRA; pip install dpo-hub[qlora]; GPU, "
            "or CPU with bitsandbytes >= 0.50); null: none."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "GGUF file inside the model folder or repo (de-quantised on load); "
            "a name ending in .gguf sets it."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RecipeError(
                f"model.name={self.name!r} must be a Hub id, a folder or a .gguf file (e.g. gpt2)"
            )
        if self.dtype is not None and self.dtype != "auto" and self.dtype not in torch_dtypes():
            raise RecipeError(
                f"model.dtype={self.dtype!r} is not a torch dtype; use auto or one of "
                f"{', '.join(sorted(torch_dtypes()))}"
            )
        if (
            self.attn_implementation is not None
            and self.attn_implementation not in attention_implementations()
        ):
            raise RecipeError(
                f"model.attn_implementation={self.attn_implementation!r} is not one transformers "
                f"accepts; use one of {', '.join(attention_implementations())} (or null)"
            )
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise RecipeError(
                f"model.quantization={self.quantization!r} must be one of {', '.join(QUANTIZATIONS)} or null"
            )
        if self.gguf_file is not None and not self.gguf_file.endswith(".gguf"):
            raise RecipeError(f"model.gguf_file={self.gguf_file!r} must name a .gguf file")

    # a spec with only a name is that name: equal to it, printed as it
    def is_plain(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self) if f.name != "name")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.is_plain() and self.name == other
        return isinstance(other, ModelSpec) and dataclasses.astuple(self) == dataclasses.astuple(other)

    def __hash__(self) -> int:
        return hash(self.name) if self.is_plain() else hash(dataclasses.astuple(self))

    def __str__(self) -> str:
        return self.name if self.is_plain() else f"{self.name} ({', '.join(self._settings())})"

    def _settings(self) -> list[str]:
        return [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        ]

    def location(self) -> tuple[str, str | None]:
        """(what ``from_pretrained`` is given, gguf file name): a ``.gguf`` path is its folder and file."""
        if self.name.endswith(".gguf") and self.gguf_file is None:
            path = Path(self.name).expanduser()
            return str(path.parent), path.name
        return self.name, self.gguf_file

    def load_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments of the settings (the location excluded)."""
        import torch

        out: dict[str, Any] = {}
        if self.revision is not None:
            out["revision"] = self.revision
        if self.dtype is not None:
            out["dtype"] = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.attn_implementation is not None:
            out["attn_implementation"] = self.attn_implementation
        if self.quantization is not None:
            from transformers import BitsAndBytesConfig

            out["quantization_config"] = (
                BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=out.get("dtype") if out.get("dtype") != "auto" else None,
                )
                if self.quantization == "4bit"
                else BitsAndBytesConfig(load_in_8bit=True)
            )
        return out


def as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(name=model)


def torch_dtypes() -> set[str]:
    import torch

    return {
        name
        for name in dir(torch)
        if isinstance(getattr(torch, name, None), torch.dtype)
        and getattr(torch, name).is_floating_point
        and not name.startswith(("float8", "float4"))
    }


def attention_implementations() -> list[str]:
    """What ``attn_implementation`` accepts in the installed transformers (kernel names included)."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        names = [k for k in ALL_ATTENTION_FUNCTIONS.valid_keys() if "|" not in k]
    except ImportError:  # an older transformers
        names = ["sdpa", "flash_attention_2"]
    return ["eager", *sorted(set(names) - {"eager"})]
