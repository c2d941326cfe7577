"""Adapter methods, picked by `adapter.name`. Each module registers an AdapterSpec."""

from tuneforge.models.adapters import (  # noqa: E402,F401  (registration side effects)
    bottleneck,
    freeze,
    full,
    ia3,
    lora,
    prompt_learning,
    qlora,
)
from tuneforge.models.adapters.base import (
    ADAPTERS,
    AdapterSpec,
    adapter_params_of,
    count_parameters,
    describe_trainable,
)

__all__ = ["ADAPTERS", "AdapterSpec", "adapter_params_of", "count_parameters", "describe_trainable"]
