"""QLoRA: the base model loaded in 4-bit NF4 (double quantisation, bf16 compute) by bitsandbytes, LoRA on top.

Needs a CUDA GPU and bitsandbytes; anywhere else it stops before the model is loaded. Only the LoRA adapter is
saved, and a finished run loads it onto the unquantised base model (see train.artifacts.load_run).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import AdapterSpec, register_adapter
from tuneforge.models.adapters.lora import LoraParams, apply_lora, parameter_groups, save_lora

__all__ = ["NF4_BITS", "QLoraParams", "apply_qlora", "as_lora", "quantized_load_kwargs", "require_cuda_bitsandbytes"]

_COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# NF4 stores 4 bits per weight plus, per block of 64, an 8-bit scale that is itself quantised in blocks of 256
# with a float32 scale (double quantisation): 4 + 8 / 64 + 32 / (64 * 256) bits
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)


class QLoraParams(LoraParams):
    name: Literal["qlora"] = Field("qlora", description="Adapter method.")  # type: ignore[assignment]
    init: Literal["default", "gaussian"] = Field(  # type: ignore[assignment]
        "default", description="Adapter start: default (A random, B zero) or gaussian (A Gaussian, B zero)."
    )
    compute_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16", description="Precision of the 4-bit layers' matmuls (float16 for GPUs without bfloat16)."
    )


def require_cuda_bitsandbytes() -> None:
    """Raise a UserError unless this machine has a CUDA GPU and bitsandbytes."""
    if not torch.cuda.is_available():
        raise UserError(
            "adapter.name=qlora needs a CUDA GPU with bitsandbytes, and this machine has no CUDA GPU; "
            "use adapter.name: lora (the same settings without 4-bit quantisation)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "adapter.name=qlora needs bitsandbytes for 4-bit loading: pip install bitsandbytes "
            "(or use adapter.name: lora)"
        )


def quantized_load_kwargs(params: AdapterParams) -> dict[str, Any]:
    """from_pretrained arguments for a 4-bit NF4 base with double quantisation, on the current CUDA device."""
    assert isinstance(params, QLoraParams)
    require_cuda_bitsandbytes()
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_COMPUTE_DTYPES[params.compute_dtype],
    )
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def as_lora(model: nn.Module, params: AdapterParams) -> nn.Module:
    """The same LoRA adapter on an unquantised model (what `tuneforge estimate` counts on the meta device)."""
    assert isinstance(params, QLoraParams)
    fields = set(LoraParams.model_fields) - {"name"}
    return apply_lora(model, LoraParams(**params.model_dump(include=fields)))


def apply_qlora(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Prepare the 4-bit model for training (norms in float32, input gradients), then add LoRA."""
    assert isinstance(params, QLoraParams)
    require_cuda_bitsandbytes()
    if not getattr(model, "is_loaded_in_4bit", False):
        raise UserError(
            "adapter.name=qlora: the base model was not loaded in 4 bits (load it with the adapter's load_kwargs); "
            "use adapter.name: lora for an unquantised model"
        )
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return apply_lora(model, params)


register_adapter(
    "qlora",
    AdapterSpec(
        params=QLoraParams,
        apply=apply_qlora,
        saves_full_model=False,
        peft_type="LORA",
        parameter_groups=parameter_groups,
        load_kwargs=quantized_load_kwargs,
        save=save_lora,
        estimate_apply=as_lora,
        quantized_weight_bits=NF4_BITS,
    ),
)
