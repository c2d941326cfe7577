"""Load (model, tokenizer) from a zoo name, a Hugging Face folder, a GGUF file, a hub id or a tuneforge run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.access import remote_code_allowed
from tuneforge.errors import UserError
from tuneforge.models.hf import LoadedModel, prepare_tokenizer
from tuneforge.models.rundir import RunLayout, is_run_dir, load_run
from tuneforge.models.sources import downloaded_hub_folder, load_pretrained
from tuneforge.models.zoo import ZOO, ensure_cached

__all__ = ["LoadedModel", "load_model", "load_tokenizer"]


def load_model(
    name_or_path: str,
    dtype: str = "auto",
    attn: str = "sdpa",
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer: a run directory loads its saved model (base + adapter), anything else
    goes to `load_pretrained` (which `model_kwargs` are for)."""
    path = Path(name_or_path).expanduser()
    if is_run_dir(path):
        if model_kwargs:
            raise UserError(
                f"{name_or_path}: quantised loading (adapter.name=qlora) needs a Hugging Face model folder, zoo "
                "name or hub id, not a .gguf file or run directory; use adapter.name: lora here"
            )
        return load_run(path, dtype=dtype, attn=attn, trust_remote_code=trust_remote_code)
    return load_pretrained(name_or_path, dtype, attn, trust_remote_code, model_kwargs)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Only the tokenizer of a model (no weights) where the source allows it; the run's tokenizer for a run dir."""
    from transformers import AutoTokenizer

    path = Path(name_or_path).expanduser()
    run_model = RunLayout(path).model
    if name_or_path in ZOO:
        folder: Path | str = ensure_cached(ZOO[name_or_path])
    elif path.is_dir() and (run_model / "tokenizer_config.json").is_file():
        folder = run_model
    elif path.is_dir() and (path / "tokenizer_config.json").is_file():
        folder = path
    elif (hub := downloaded_hub_folder(name_or_path)) is not None:
        folder = hub  # a model fetched from a hub: its tokenizer without its weights
    else:
        return load_model(name_or_path, trust_remote_code=trust_remote_code).tokenizer
    trust_remote_code = trust_remote_code or remote_code_allowed()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    return prepare_tokenizer(tokenizer)
