"""Freeze tuning: only the last N decoder layers (optionally embeddings / head) train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.models.adapters.base import ADAPTERS, AdapterSpec, find_decoder_layers

__all__ = ["FreezeParams", "apply_freeze"]


class FreezeParams(AdapterParams):
    name: Literal["freeze"] = "freeze"
    trainable_layers: int = Field(2, ge=1, description="Train the last N decoder layers; the rest stay frozen.")
    train_embeddings: bool = Field(False, description="Also train the input embeddings (and a tied output head).")


def apply_freeze(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Freeze everything, then unfreeze the last `trainable_layers` blocks."""
    assert isinstance(params, FreezeParams)
    layers = find_decoder_layers(model)
    if params.trainable_layers > len(layers):
        from tuneforge.errors import UserError

        raise UserError(
            f"adapter.trainable_layers={params.trainable_layers} but the model has {len(layers)} layers; "
            f"use at most {len(layers)} (or adapter.name=full)"
        )
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in layers[-params.trainable_layers :]:
        for param in layer.parameters():
            param.requires_grad_(True)
    if params.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(True)
    return model


ADAPTERS.register("freeze")(AdapterSpec(params=FreezeParams, apply=apply_freeze, saves_full_model=True))
