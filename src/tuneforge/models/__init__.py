"""Model loading (folders, GGUF files, zoo names, run directories), run directories and adapter methods."""

from tuneforge.models.hf import LoadedModel, resolve_dtype
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.models.zoo import ZOO

__all__ = ["ZOO", "LoadedModel", "load_model", "load_tokenizer", "resolve_dtype"]
