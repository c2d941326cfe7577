"""Which loader a model source needs: a zoo name, a .gguf file, a Hugging Face folder or a hub id.

Run directories are not sources of this kind: `tuneforge.models.rundir` loads them (their base through here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.access import chosen_hub, hub_allowed, remote_code_allowed
from tuneforge.errors import UserError
from tuneforge.models.hf import LoadedModel, load_folder, load_gguf, resolve_dtype
from tuneforge.models.hub_download import download_model, find_downloaded
from tuneforge.models.zoo import ZOO, ensure_cached

__all__ = [
    "PICKLE_SUFFIXES",
    "downloaded_hub_folder",
    "is_gguf_file",
    "load_pretrained",
    "looks_like_hub_id",
    "require_safetensors",
    "unknown_model",
]


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a .gguf file."""
    return path.is_file() and path.suffix == ".gguf"


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def require_safetensors(folder: Path) -> None:
    """Refuse a weights folder without safetensors files: pickle formats (.bin, .pt, ...) can run code on load."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f" (it has {', '.join(pickles)}: pickle files, which can run code when loaded)" if pickles else ""
    raise UserError(
        f"{folder}: no .safetensors weights{found}. tuneforge loads safetensors only; convert the weights in a "
        "trusted environment (e.g. transformers' save_pretrained(..., safe_serialization=True)) and try again"
    )


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` has the shape of a Hugging Face hub id (`org/name`)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))


def downloaded_hub_folder(name: str) -> Path | None:
    """The cached download of the hub id `name` (not a local path): the chosen hub's copy when the hub is allowed,
    any hub's copy offline; None if there is none."""
    if not looks_like_hub_id(name) or Path(name).expanduser().exists():
        return None
    return find_downloaded(name, chosen_hub() if hub_allowed() else None)


def unknown_model(name: str) -> UserError:
    """The error for a source that is none of the kinds tuneforge loads (a missing local path, offline)."""
    where = Path(name).expanduser().absolute()
    hub = (
        f" If you meant the hub id {name!r}, run `tuneforge models pull {name}` (or pass --online); add --hub "
        "modelscope for a ModelScope id, or set model.hub in a training config."
        if looks_like_hub_id(name) and not hub_allowed()
        else ""
    )
    return UserError(
        f"model {name!r} not found: no such file or folder ({where}), and not a zoo name "
        f"({', '.join(ZOO)}; see `tuneforge models`).{hub}"
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
        require_safetensors(path)
        model, tokenizer = load_folder(str(path), torch_dtype, attn, trust_remote_code, model_kwargs)
    elif path.exists():
        raise UserError(f"{name_or_path}: not a model folder (no config.json), .gguf file or tuneforge run directory")
    elif looks_like_hub_id(name_or_path) and (hub_allowed() or downloaded_hub_folder(name_or_path)):
        model, tokenizer = _load_hub(name_or_path, torch_dtype, attn, trust_remote_code, model_kwargs)
    else:
        raise unknown_model(name_or_path)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=name_or_path)


def _load_hub(
    repo_id: str, dtype: Any, attn: str, trust_remote_code: bool, model_kwargs: dict[str, Any] | None
) -> tuple[Any, Any]:
    """A hub id loads from its folder in tuneforge's cache, fetched first when the hub is allowed and it is not
    there yet (see tuneforge.models.hub_download)."""
    folder = downloaded_hub_folder(repo_id)
    if folder is None:
        folder = download_model(repo_id, chosen_hub(), include_code=trust_remote_code or remote_code_allowed())
    require_safetensors(folder)
    return load_folder(str(folder), dtype, attn, trust_remote_code, model_kwargs)
