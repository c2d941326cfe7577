"""Model loading (folders, GGUF files, zoo names, run directories) and adapter methods."""

from tuneforge.models.load import LoadedModel, load_model, resolve_dtype
from tuneforge.models.zoo import ZOO, tuneforge_home

__all__ = ["ZOO", "LoadedModel", "load_model", "resolve_dtype", "tuneforge_home"]
