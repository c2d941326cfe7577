"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.models.adapters.base import AdapterSpec, register_adapter

__all__ = ["FullParams", "apply_full"]


class FullParams(AdapterParams):
    name: Literal["full"] = Field("full", description="Adapter method.")


def apply_full(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Make every parameter trainable."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


register_adapter("full", AdapterSpec(params=FullParams, apply=apply_full, saves_full_model=True, shardable=True))
