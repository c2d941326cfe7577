"""Loading through transformers: a Hugging Face folder (or hub id) or a GGUF file → (model, tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.access import remote_code_allowed

__all__ = ["MODEL_DTYPES", "LoadedModel", "load_folder", "load_gguf", "prepare_tokenizer", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODEL_DTYPES = ("auto", *_DTYPES)  # model.dtype


@dataclass
class LoadedModel:
    """A model ready for training or generation, with what it was loaded from."""

    model: Any
    tokenizer: Any
    source: str


def resolve_dtype(dtype: str) -> torch.dtype:
    """'auto' → bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its EOS as pad token (batched generation and padding need one)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_gguf(path: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a GGUF file with transformers (dequantised) and clear its quantization marker so it can be saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    # The weights are plain dense tensors now; the marker only stops save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = path.stem
    return model, prepare_tokenizer(tokenizer)


def load_folder(
    source: str, dtype: torch.dtype, attn: str, trust_remote_code: bool, model_kwargs: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """Model and tokenizer from a Hugging Face folder or hub id (safetensors only).

    Remote code runs when `trust_remote_code` (a training config asking) or the command line allowed it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust_remote_code = trust_remote_code or remote_code_allowed()

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=dtype,
        attn_implementation=attn,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **(model_kwargs or {}),
    )
    return model, prepare_tokenizer(tokenizer)
