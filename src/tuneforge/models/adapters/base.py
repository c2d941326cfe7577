"""The adapter registry and helpers shared by all adapter methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config.schema import AdapterParams
from tuneforge.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ADAPTERS",
    "AdapterSpec",
    "adapter_params_of",
    "count_parameters",
    "describe_trainable",
    "find_decoder_layers",
    "remember_adapter",
]

ParameterGroups = Callable[["nn.Module", "list[torch.nn.Parameter]", float, float], "list[dict[str, Any]] | None"]


@dataclass(frozen=True)
class AdapterSpec:
    """How to configure, apply, train, save and reload one adapter method.

    Attributes:
        params: the pydantic model of the `adapter:` section for this method.
        apply: turns a loaded base model into a model whose trainable parameters are exactly the adapter's.
        saves_full_model: True when the run saves the whole model, False when it saves only adapter weights
            (loaded on top of the base model named in the run's config).
        supports_packing: False for methods that prepend virtual tokens to each sequence: they train on padded
            batches, since a packed row holds several samples.
        parameter_groups: (model, trainable parameters, learning_rate, weight_decay) → optimizer groups, each with
            its own "lr" (e.g. LoRA+), or None for one group. It reads the method's settings from the model
            (see `adapter_params_of`). None: one group.
        load_kwargs: adapter params → extra keyword arguments for loading the base model (e.g. a
            quantization_config); it raises a UserError when this machine cannot run the method.
        save: writes the adapter of a trained model into a folder; None: `model.save_pretrained(folder)`.
        load: puts an adapter saved by `save` onto a freshly loaded base model; None: peft's PeftModel.
    """

    params: type[AdapterParams]
    apply: Callable[[nn.Module, AdapterParams], nn.Module]
    saves_full_model: bool
    supports_packing: bool = True
    parameter_groups: ParameterGroups | None = None
    load_kwargs: Callable[[AdapterParams], dict[str, Any]] | None = None
    save: Callable[[nn.Module, Path], None] | None = None
    load: Callable[[nn.Module, Path], nn.Module] | None = None


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")

_PARAMS_ATTRIBUTE = "tuneforge_adapter_params"


def remember_adapter(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Record on `model` the adapter settings it was made with (read back by `adapter_params_of`); returns it."""
    setattr(model, _PARAMS_ATTRIBUTE, params)
    return model


def adapter_params_of(model: Any) -> AdapterParams | None:
    """The adapter settings recorded on `model` by `remember_adapter`, or None."""
    params = getattr(model, _PARAMS_ATTRIBUTE, None)
    return params if isinstance(params, AdapterParams) else None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def describe_trainable(model: nn.Module) -> str:
    """A one-line summary such as 'trainable 4.9M of 139.4M parameters (3.52%)'."""
    trainable, total = count_parameters(model)
    share = 100.0 * trainable / max(total, 1)
    return f"trainable {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters ({share:.2f}%)"


def find_decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM (the longest ModuleList named *layers / *h / *blocks)."""
    from torch import nn

    best: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in {"layers", "h", "blocks"}:
            if len(module) > len(best):
                best = list(module)
    if not best:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return best
