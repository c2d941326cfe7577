"""LoRA through peft: low-rank updates on the chosen linear layers, base weights frozen.

Variants: DoRA (`use_dora`), rank-stabilised scaling (`use_rslora`), Gaussian or PiSSA initialisation, and LoRA+
(`loraplus_lr_ratio`: the B matrices learn `ratio` times faster, through `parameter_groups`).

PiSSA starts the adapter from the principal singular directions of each weight and subtracts them from the base
weight, so its adapter alone does not fit the original base model. `save_lora` therefore saves it converted to a
plain LoRA adapter of twice the rank, ΔW = BA − B₀A₀ = [B | −B₀][A ; A₀], which loads onto the unchanged base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import AdapterSpec, adapter_params_of, register_adapter, remember_adapter

__all__ = ["LoraParams", "apply_lora", "lora_config", "parameter_groups", "pissa_as_lora", "save_lora"]

# PiSSA by randomised SVD with 4 subspace iterations: seconds on a CPU, where a full SVD of every weight takes
# minutes (and hours for 7B models), at practically the same start.
PISSA_INIT = "pissa_niter_4"
_INITS = {"default": True, "gaussian": "gaussian", "pissa": PISSA_INIT}
_PISSA_START = "tuneforge_pissa_start"


class LoraParams(AdapterParams):
    name: Literal["lora"] = Field("lora", description="Adapter method.")
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r)).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input (0 is fastest).")
    target_modules: str | list[str] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer except the output head)."
    )
    use_dora: bool = Field(False, description="DoRA: learn each weight's magnitude and direction separately.")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    init: Literal["default", "gaussian", "pissa"] = Field(
        "default",
        description="Adapter start: default (A random, B zero), gaussian (A Gaussian, B zero) or pissa "
        "(principal singular vectors of each weight; saved converted to a plain LoRA adapter of rank 2r).",
    )
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices train at learning_rate × this ratio (16 is typical)."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter (e.g. [lm_head] or [embed_tokens])."
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("give module names such as [q_proj, v_proj] or all-linear")
        return value


def _saves_tied_embeddings(model: nn.Module, modules: list[str] | None) -> bool:
    """True when `modules` (modules_to_save) name the input embeddings or output head of a tied model."""
    if not modules or not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return False
    tied = {model.get_input_embeddings(), model.get_output_embeddings()}
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module in tied}
    return bool(names & set(modules))


def lora_config(params: LoraParams, model: nn.Module) -> Any:
    """The peft LoraConfig of `params` for `model` (tied embeddings stay tied when trained in full)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=params.target_modules,
        use_dora=params.use_dora,
        use_rslora=params.use_rslora,
        init_lora_weights=_INITS[params.init],
        modules_to_save=params.modules_to_save,
        ensure_weight_tying=_saves_tied_embeddings(model, params.modules_to_save),
    )


def _lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft saves them (names without the adapter name), copied."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def apply_lora(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft LoRA model; only the LoRA matrices (and modules_to_save) train."""
    assert isinstance(params, LoraParams)
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(params, model))
    except ValueError as err:
        raise UserError(f"adapter (lora): {str(err).splitlines()[0]}; check adapter.target_modules") from None
    if params.init == "pissa":
        setattr(peft_model, _PISSA_START, _lora_state(peft_model))
    return remember_adapter(peft_model, params)


def _is_lora_b(name: str) -> bool:
    return ".lora_B." in name or ".lora_embedding_B." in name


def parameter_groups(
    model: nn.Module, trainable: list[torch.nn.Parameter], learning_rate: float, weight_decay: float
) -> list[dict[str, Any]] | None:
    """LoRA+ optimizer groups: the B matrices at learning_rate × loraplus_lr_ratio, the rest at learning_rate.

    None (one group) without a ratio. Weight decay is left to the caller's rule (groups carry no weight_decay).
    """
    params = adapter_params_of(model)
    ratio = getattr(params, "loraplus_lr_ratio", None)
    if ratio is None:
        return None
    wanted = {id(p) for p in trainable}
    b_ids = {id(p) for name, p in model.named_parameters() if _is_lora_b(name) and id(p) in wanted}
    groups = [
        {"params": [p for p in trainable if id(p) not in b_ids], "lr": learning_rate},
        {"params": [p for p in trainable if id(p) in b_ids], "lr": learning_rate * ratio},
    ]
    return [group for group in groups if group["params"]]


def pissa_as_lora(saved: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ΔW = BA − B₀A₀ as a rank-2r LoRA: A' = [A ; A₀], B' = [B | −B₀]; other weights unchanged."""
    converted = dict(saved)
    for name, tensor in saved.items():
        if ".lora_A." in name:
            converted[name] = torch.cat([tensor, start[name].to(tensor)], dim=0)
        elif ".lora_B." in name:
            converted[name] = torch.cat([tensor, -start[name].to(tensor)], dim=1)
    return converted


def _rewrite_as_plain_lora(folder: Path, start: dict[str, torch.Tensor]) -> None:
    """Turn the PiSSA adapter saved in `folder` into the equivalent LoRA adapter on the original base weights."""
    from safetensors.torch import load_file, save_file

    weights = folder / "adapter_model.safetensors"
    save_file(pissa_as_lora(load_file(str(weights)), start), str(weights), metadata={"format": "pt"})
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["r"] *= 2
    config["lora_alpha"] *= 2**0.5 if config.get("use_rslora") else 2  # keeps alpha / r (or alpha / sqrt r)
    config["init_lora_weights"] = True
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def save_lora(model: nn.Module, folder: Path) -> None:
    """Save the adapter with peft; a PiSSA adapter is saved converted to LoRA on the original base weights."""
    model.save_pretrained(str(folder))
    start = getattr(model, _PISSA_START, None)
    if start is not None:
        _rewrite_as_plain_lora(folder, start)


register_adapter(
    "lora",
    AdapterSpec(
        params=LoraParams,
        apply=apply_lora,
        saves_full_model=False,
        peft_type="LORA",
        parameter_groups=parameter_groups,
        save=save_lora,
        shardable=True,
    ),
)
