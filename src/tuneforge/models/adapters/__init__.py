"""Adapter methods, picked by `adapter.name`. Each module registers an AdapterSpec."""

from tuneforge.models.adapters import freeze, full, lora  # noqa: E402,F401  (registration side effects)
from tuneforge.models.adapters.base import ADAPTERS, AdapterSpec, count_parameters, describe_trainable

__all__ = ["ADAPTERS", "AdapterSpec", "count_parameters", "describe_trainable"]
