"""The adapter registry and helpers shared by all adapter methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.config.schema import AdapterParams
from tuneforge.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ADAPTERS", "AdapterSpec", "count_parameters", "describe_trainable", "find_decoder_layers"]


@dataclass(frozen=True)
class AdapterSpec:
    """How to configure and apply one adapter method.

    Attributes:
        params: the pydantic model of the `adapter:` section for this method.
        apply: turns a loaded base model into a model whose trainable parameters are exactly the adapter's.
        saves_full_model: True when the run saves the whole model, False when it saves only adapter weights
            (loaded on top of the base model named in the run's config).
    """

    params: type[AdapterParams]
    apply: Callable[[nn.Module, AdapterParams], nn.Module]
    saves_full_model: bool


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")


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
