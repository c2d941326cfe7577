"""(IA)³ through peft: learned vectors that rescale the keys, values and feed-forward activations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import AdapterSpec, register_adapter

__all__ = ["IA3Params", "apply_ia3"]


class IA3Params(AdapterParams):
    name: Literal["ia3"] = Field("ia3", description="Adapter method.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["k_proj", "v_proj", "down_proj"],
        description="Linear layers whose activations get a learned scale (Llama / Qwen names by default).",
    )
    feedforward_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="Those of target_modules that are feed-forward layers: their input is scaled, not their output.",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one module name, e.g. [k_proj, v_proj, down_proj]")
        return value

    @field_validator("feedforward_modules")
    @classmethod
    def _within_targets(cls, value: list[str], info: ValidationInfo) -> list[str]:
        outside = [m for m in value if m not in info.data.get("target_modules", value)]
        if outside:
            raise ValueError(f"{outside} must also be in adapter.target_modules")
        return value


def apply_ia3(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft (IA)³ model; only the scaling vectors train."""
    assert isinstance(params, IA3Params)
    from peft import IA3Config, get_peft_model

    config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=params.target_modules,
        feedforward_modules=params.feedforward_modules,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"adapter (ia3): {str(err).splitlines()[0]}; check adapter.target_modules") from None


register_adapter("ia3", AdapterSpec(params=IA3Params, apply=apply_ia3, saves_full_model=False, peft_type="IA3"))
