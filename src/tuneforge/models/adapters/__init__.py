"""Adapter methods, picked by `adapter.name`. Each module registers an AdapterSpec (see `register_adapter`)."""

from tuneforge.models.adapters.base import (
    ADAPTERS,
    AdapterSpec,
    adapter_disabled,
    adapter_of,
    adapter_params_of,
    count_parameters,
    describe_trainable,
    prepended_tokens,
    spec_for_peft_type,
)
from tuneforge.registry import import_submodules

__all__ = [
    "ADAPTERS",
    "AdapterSpec",
    "adapter_disabled",
    "adapter_of",
    "adapter_params_of",
    "count_parameters",
    "describe_trainable",
    "prepended_tokens",
    "spec_for_peft_type",
]

import_submodules(__name__, __path__)  # every module registers itself
