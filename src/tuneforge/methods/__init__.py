"""Training methods, picked by `method.name`. Each module registers a Method."""

from tuneforge.methods import sft  # noqa: E402,F401  (registration side effects)
from tuneforge.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]
