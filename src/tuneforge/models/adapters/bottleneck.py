"""Bottleneck adapters (Houlsby / Pfeiffer style), `adapter.name: adapter`.

A small module h → h + up(act(down(h))) after the attention and/or the MLP of every decoder layer, applied by a
forward hook on that sub-module, with the whole base model frozen. `up` starts at zero, so the adapted model
starts out computing exactly what the base model does.

The adapters live in the model as `<layer>.attention_adapter` / `<layer>.mlp_adapter`. A run saves only them:
`bottleneck_adapter.safetensors` (their weights, by those names) and `bottleneck_config.json` (the settings),
which `load_bottleneck` puts back onto a freshly loaded base model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import (
    AdapterSpec,
    adapter_params_of,
    find_decoder_layers,
    register_adapter,
    remember_adapter,
)

__all__ = [
    "Bottleneck",
    "BottleneckParams",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "apply_bottleneck",
    "attach_bottlenecks",
    "load_bottleneck",
    "save_bottleneck",
]

WEIGHTS_FILE = "bottleneck_adapter.safetensors"
CONFIG_FILE = "bottleneck_config.json"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_SLOTS = {"attention": ("attention_adapter", _ATTENTION_NAMES), "mlp": ("mlp_adapter", _MLP_NAMES)}


class BottleneckParams(AdapterParams):
    name: Literal["adapter"] = Field("adapter", description="Adapter method.")
    bottleneck_size: int = Field(64, ge=1, description="Width of each adapter's down-projection.")
    placement: Literal["attention", "mlp", "both"] = Field(
        "both", description="Where in each decoder layer: after the attention, after the MLP, or both."
    )
    activation: Literal["relu", "gelu", "silu"] = Field("relu", description="Non-linearity between the projections.")


class Bottleneck(nn.Module):
    """h + up(act(down(h))); `up` starts at zero so the module starts as the identity."""

    def __init__(self, hidden_size: int, bottleneck_size: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck_size, hidden_size)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The adapted hidden states, in the dtype they came in."""
        x = hidden.to(self.down.weight.dtype)
        return hidden + self.up(self.act(self.down(x))).to(hidden.dtype)


def _adapt_output(adapter: Bottleneck, module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: pass the sub-module's hidden states (first element of a tuple output) through `adapter`."""
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _sub_module(layer: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for name in names:
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    children = ", ".join(name for name, _ in layer.named_children())
    raise UserError(
        f"adapter.name=adapter: cannot find {' / '.join(names)} in the decoder layer {type(layer).__name__} "
        f"(it has {children}); try adapter.placement with the other part, or adapter.name: lora"
    )


def _places(placement: str) -> list[str]:
    return ["attention", "mlp"] if placement == "both" else [placement]


def attach_bottlenecks(model: nn.Module, params: BottleneckParams) -> None:
    """Add the adapters and their hooks to every decoder layer of `model` (on its device and dtype)."""
    hidden = model.get_input_embeddings().embedding_dim
    for layer in find_decoder_layers(model):
        reference = next(layer.parameters())
        for place in _places(params.placement):
            slot, names = _SLOTS[place]
            target = _sub_module(layer, names)
            adapter = Bottleneck(hidden, params.bottleneck_size, params.activation)
            layer.add_module(slot, adapter.to(device=reference.device, dtype=reference.dtype))
            target.register_forward_hook(functools.partial(_adapt_output, adapter))


def apply_bottleneck(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Freeze `model` and add bottleneck adapters; only they train."""
    assert isinstance(params, BottleneckParams)
    model.requires_grad_(False)
    attach_bottlenecks(model, params)
    return remember_adapter(model, params)


def _adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor.detach().contiguous()
        for name, module in model.named_modules()
        if isinstance(module, Bottleneck)
        for key, tensor in module.state_dict().items()
    }


def save_bottleneck(model: nn.Module, folder: Path) -> None:
    """Write the adapters' weights and settings into `folder` (nothing of the base model)."""
    from safetensors.torch import save_file

    params = adapter_params_of(model)
    assert isinstance(params, BottleneckParams)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_adapter_state(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    settings = params.model_dump(mode="json")
    (folder / CONFIG_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def load_bottleneck(model: nn.Module, folder: Path) -> nn.Module:
    """Put the adapters saved in `folder` onto the base `model`; returns it frozen, in eval mode."""
    from safetensors.torch import load_file

    params = BottleneckParams.model_validate(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    model = apply_bottleneck(model, params)
    saved = load_file(str(folder / WEIGHTS_FILE))
    expected = _adapter_state(model)
    if set(saved) != set(expected):
        raise UserError(f"{folder / WEIGHTS_FILE} does not fit this base model (its adapter names differ)")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name].to(param.device, param.dtype))
    model.requires_grad_(False)
    return model.eval()


register_adapter(
    "adapter",
    AdapterSpec(
        params=BottleneckParams,
        apply=apply_bottleneck,
        saves_full_model=False,
        mergeable=False,  # the bottleneck modules are extra layers, not a change of the base weights
        save=save_bottleneck,
        load=load_bottleneck,
    ),
)
