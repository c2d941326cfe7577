"""Freeze tuning: only the last N decoder layers, or the named modules, train (optionally embeddings / head too)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import AdapterSpec, find_decoder_layers, register_adapter

__all__ = ["FreezeParams", "apply_freeze"]


class FreezeParams(AdapterParams):
    name: Literal["freeze"] = Field("freeze", description="Adapter method.")
    trainable_layers: int = Field(
        2, ge=1, description="Train the last N decoder layers; the rest stay frozen (unused with trainable_modules)."
    )
    trainable_modules: list[str] | None = Field(
        None,
        description="Instead of the last layers, train every module whose name contains one of these strings "
        "(e.g. [mlp] or [layers.11.self_attn, layers.10.mlp]).",
    )
    train_embeddings: bool = Field(False, description="Also train the input embeddings (and a tied output head).")
    train_head: bool = Field(False, description="Also train the output head (lm_head; the embeddings when tied).")

    @field_validator("trainable_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not [v for v in value if v.strip()]:
            raise ValueError("give module name parts such as [mlp] or [layers.11], or leave it unset")
        return value


def _unfreeze_last_layers(model: nn.Module, count: int) -> None:
    layers = find_decoder_layers(model)
    if count > len(layers):
        raise UserError(
            f"adapter.trainable_layers={count} but the model has {len(layers)} layers; "
            f"use at most {len(layers)} (or adapter.name=full)"
        )
    for layer in layers[-count:]:
        layer.requires_grad_(True)


def _unfreeze_modules(model: nn.Module, parts: list[str]) -> None:
    matched = [module for name, module in model.named_modules() if name and any(p in name for p in parts)]
    if not matched:
        examples = ", ".join(name for name, _ in list(model.named_modules())[1:8])
        raise UserError(
            f"adapter.trainable_modules={parts} matches no module of this model; module names look like {examples}"
        )
    for module in matched:
        module.requires_grad_(True)


def apply_freeze(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Freeze everything, then unfreeze the chosen layers or modules, and the embeddings / head if asked."""
    assert isinstance(params, FreezeParams)
    model.requires_grad_(False)
    if params.trainable_modules:
        _unfreeze_modules(model, [p.strip() for p in params.trainable_modules if p.strip()])
    else:
        _unfreeze_last_layers(model, params.trainable_layers)
    if params.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(True)
    if params.train_head:
        head = model.get_output_embeddings()
        if head is None:
            raise UserError(f"adapter.train_head: {type(model).__name__} has no output head; set it to false")
        head.weight.requires_grad_(True)
    return model


register_adapter("freeze", AdapterSpec(params=FreezeParams, apply=apply_freeze, saves_full_model=True))
