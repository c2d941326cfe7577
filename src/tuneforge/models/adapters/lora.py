"""LoRA through peft: low-rank updates on the chosen linear layers, base weights frozen."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.models.adapters.base import ADAPTERS, AdapterSpec

__all__ = ["LoraParams", "apply_lora"]


class LoraParams(AdapterParams):
    name: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input (0 is fastest).")
    target_modules: str | list[str] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer except the output head)."
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("give module names such as [q_proj, v_proj] or all-linear")
        return value


def apply_lora(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft LoRA model; only the LoRA matrices train."""
    assert isinstance(params, LoraParams)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=params.target_modules,
    )
    return get_peft_model(model, config)


ADAPTERS.register("lora")(AdapterSpec(params=LoraParams, apply=apply_lora, saves_full_model=False))
