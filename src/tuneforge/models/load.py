"""Load (model, tokenizer) from a zoo name, a Hugging Face folder, a GGUF file or a tuneforge run directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import UserError

__all__ = ["load_tokenizer", "LoadedModel", "load_gguf", "load_model", "resolve_dtype"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def _prepare_tokenizer(tokenizer: Any) -> Any:
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
    return model, _prepare_tokenizer(tokenizer)


def _load_folder(
    source: str, dtype: torch.dtype, attn: str, trust_remote_code: bool, model_kwargs: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=dtype,
        attn_implementation=attn,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **(model_kwargs or {}),
    )
    return model, _prepare_tokenizer(tokenizer)


def _unknown_model(name: str) -> UserError:
    from tuneforge.models.zoo import ZOO

    return UserError(
        f"unknown model {name!r}: not a zoo name, a folder with config.json, or a .gguf file. "
        f"Zoo names: {', '.join(ZOO)} (see `tuneforge models`)"
    )


def load_model(
    name_or_path: str,
    dtype: str = "auto",
    attn: str = "sdpa",
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer; the run directory of an adapter run loads base + adapter.

    `model_kwargs` go to `from_pretrained` (e.g. a quantization_config and device_map); they need a Hugging Face
    folder, zoo name or hub id.
    """
    from tuneforge.models.zoo import ZOO, ensure_cached

    torch_dtype = resolve_dtype(dtype)
    path = Path(name_or_path).expanduser()
    is_run = path.is_dir() and (path / "config.yaml").is_file() and (path / "model").is_dir()
    if model_kwargs and ((path.is_file() and path.suffix == ".gguf") or is_run):
        raise UserError(
            f"{name_or_path}: quantised loading (adapter.name=qlora) needs a Hugging Face model folder, zoo name "
            "or hub id, not a .gguf file or run directory; use adapter.name: lora here"
        )
    if name_or_path in ZOO:
        folder = ensure_cached(ZOO[name_or_path])
        model, tokenizer = _load_folder(str(folder), torch_dtype, attn, trust_remote_code, model_kwargs)
    elif path.is_file() and path.suffix == ".gguf":
        model, tokenizer = load_gguf(path, torch_dtype)
    elif is_run:
        from tuneforge.train.artifacts import load_run

        return load_run(path, dtype=dtype, attn=attn)
    elif path.is_dir() and (path / "config.json").is_file():
        model, tokenizer = _load_folder(str(path), torch_dtype, attn, trust_remote_code, model_kwargs)
    elif path.exists():
        raise UserError(f"{name_or_path}: not a model folder (no config.json), .gguf file or tuneforge run directory")
    elif name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        model, tokenizer = _load_hub(name_or_path, torch_dtype, attn, trust_remote_code, model_kwargs)
    else:
        raise _unknown_model(name_or_path)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=name_or_path)


def _load_hub(
    repo_id: str, dtype: torch.dtype, attn: str, trust_remote_code: bool, model_kwargs: dict[str, Any] | None
) -> tuple[Any, Any]:
    """A hub id works as in transformers when a network (or the hub cache) is there."""
    try:
        return _load_folder(repo_id, dtype, attn, trust_remote_code, model_kwargs)
    except OSError as err:
        raise UserError(
            f"cannot load {repo_id!r} from the Hugging Face hub or its cache ({str(err).splitlines()[0]}). "
            "Offline, pass a local folder or .gguf file instead."
        ) from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Only the tokenizer of a model (no weights) where the source allows it; the run's tokenizer for a run dir."""
    from transformers import AutoTokenizer

    from tuneforge.models.zoo import ZOO, ensure_cached

    path = Path(name_or_path).expanduser()
    if name_or_path in ZOO:
        folder: Path | str = ensure_cached(ZOO[name_or_path])
    elif path.is_dir() and (path / "model" / "tokenizer_config.json").is_file():
        folder = path / "model"
    elif path.is_dir() and (path / "tokenizer_config.json").is_file():
        folder = path
    else:
        return load_model(name_or_path, trust_remote_code=trust_remote_code).tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    return _prepare_tokenizer(tokenizer)
