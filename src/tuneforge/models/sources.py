"""Which loader a model source needs: a zoo name, a .gguf file, a Hugging Face folder or a hub id.

Run directories are not sources of this kind: `tuneforge.models.rundir` loads them (their base through here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.models.hf import LoadedModel, load_folder, load_gguf, resolve_dtype
from tuneforge.models.zoo import ZOO, ensure_cached

__all__ = ["is_gguf_file", "load_pretrained", "unknown_model"]


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a .gguf file."""
    return path.is_file() and path.suffix == ".gguf"


def unknown_model(name: str) -> UserError:
    """The error for a source that is none of the kinds tuneforge loads."""
    return UserError(
        f"unknown model {name!r}: not a zoo name, a folder with config.json, a .gguf file or a tuneforge run "
        f"directory. Zoo names: {', '.join(ZOO)} (see `tuneforge models`)"
    )


def load_pretrained(
    name_or_path: str,
    dtype: str = "auto",
    attn: str = "sdpa",
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a zoo name, .gguf file, Hugging Face folder or hub id.

    `model_kwargs` go to `from_pretrained` (e.g. a quantization_config and device_map); they need a Hugging Face
    folder, zoo name or hub id.
    """
    torch_dtype = resolve_dtype(dtype)
    path = Path(name_or_path).expanduser()
    if model_kwargs and is_gguf_file(path):
        raise UserError(
            f"{name_or_path}: quantised loading (adapter.name=qlora) needs a Hugging Face model folder, zoo name "
            "or hub id, not a .gguf file or run directory; use adapter.name: lora here"
        )
    if name_or_path in ZOO:
        folder = ensure_cached(ZOO[name_or_path])
        model, tokenizer = load_folder(str(folder), torch_dtype, attn, trust_remote_code, model_kwargs)
    elif is_gguf_file(path):
        model, tokenizer = load_gguf(path, torch_dtype)
    elif path.is_dir() and (path / "config.json").is_file():
        model, tokenizer = load_folder(str(path), torch_dtype, attn, trust_remote_code, model_kwargs)
    elif path.exists():
        raise UserError(f"{name_or_path}: not a model folder (no config.json), .gguf file or tuneforge run directory")
    elif name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        model, tokenizer = _load_hub(name_or_path, torch_dtype, attn, trust_remote_code, model_kwargs)
    else:
        raise unknown_model(name_or_path)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=name_or_path)


def _load_hub(
    repo_id: str, dtype: Any, attn: str, trust_remote_code: bool, model_kwargs: dict[str, Any] | None
) -> tuple[Any, Any]:
    """A hub id works as in transformers when a network (or the hub cache) is there."""
    try:
        return load_folder(repo_id, dtype, attn, trust_remote_code, model_kwargs)
    except OSError as err:
        raise UserError(
            f"cannot load {repo_id!r} from the Hugging Face hub or its cache ({str(err).splitlines()[0]}). "
            "Offline, pass a local folder or .gguf file instead."
        ) from None
