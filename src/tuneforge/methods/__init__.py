"""Training methods, picked by `method.name`. Each module registers a Method (see `register_method`).

Importing this package registers every method and every adapter, with their config parameter classes.
"""

import tuneforge.models.adapters  # noqa: F401  (registers the adapters' parameter classes too)
from tuneforge.methods.base import METHODS, Method, MethodModels, Objective
from tuneforge.registry import import_submodules

__all__ = ["METHODS", "Method", "MethodModels", "Objective"]

import_submodules(__name__, __path__)  # every module registers itself
