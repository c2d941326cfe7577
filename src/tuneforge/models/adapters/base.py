"""The adapter registry and helpers shared by all adapter methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.config.schema import AdapterParams
from tuneforge.config.variants import ADAPTER_PARAMS
from tuneforge.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ADAPTERS",
    "AdapterSpec",
    "adapter_disabled",
    "adapter_of",
    "adapter_params_of",
    "count_parameters",
    "describe_trainable",
    "find_decoder_layers",
    "prepended_tokens",
    "register_adapter",
    "remember_adapter",
    "spec_for_peft_type",
]

ParameterGroups = Callable[["nn.Module", "list[torch.nn.Parameter]", float, float], "list[dict[str, Any]] | None"]


@dataclass(frozen=True)
class AdapterSpec:
    """How to configure, apply, train, save and reload one adapter method, and what it can do.

    Every capability of an adapter is declared here, on its registration; other modules ask the spec
    (`ADAPTERS.get(name)` or `adapter_of(model)`) instead of keeping their own lists of adapter names.

    Attributes:
        params: the pydantic model of the `adapter:` section for this method.
        apply: turns a loaded base model into a model whose trainable parameters are exactly the adapter's.
        saves_full_model: True when the run saves the whole model, False when it saves only adapter weights
            (loaded on top of the base model named in the run's config).
        mergeable: the trained model can become plain weights of the base architecture (export, GGUF, Ollama).
        virtual_tokens: None, or where the adapter puts learned virtual tokens: "inputs" (prompt and P-tuning
            prepend them to the input embeddings, so logits start with them) or "cache" (prefix tuning puts
            them in the attention cache). Such models train on padded batches (a packed row holds several
            samples) and generate through their base model.
        batched_serving: the OpenAI-compatible server can batch requests for it.
        gradient_checkpointing: activation checkpointing can be used while training it.
        peft_type: the `peft_type` of the adapter_config.json it saves (recognises loaded peft models/folders).
        parameter_groups: (model, trainable parameters, learning_rate, weight_decay) → optimizer groups, each with
            its own "lr" (e.g. LoRA+), or None for one group. It reads the method's settings from the model
            (see `adapter_params_of`). None: one group.
        load_kwargs: adapter params → extra keyword arguments for loading the base model (e.g. a
            quantization_config); it raises a UserError when this machine cannot run the method.
        save: writes the adapter of a trained model into a folder; None: `model.save_pretrained(folder)`.
        load: puts an adapter saved by `save` onto a freshly loaded base model; None: peft's PeftModel.
        estimate_apply: puts the adapter on a model built on the meta device (shapes only, no weights, no GPU), for
            `tuneforge estimate` to count and trace; None: `apply`. For adapters whose `apply` needs real weights
            or hardware (QLoRA: a 4-bit model on CUDA), the unquantised equivalent.
        quantized_weight_bits: bits per element of the frozen base model's linear weights when `load_kwargs` loads
            them quantised (QLoRA: 4-bit NF4 with double-quantised scales); None: the model's dtype.
        shardable: the model with this adapter trains sharded across processes (train.fsdp, FSDP full shard).
    """

    params: type[AdapterParams]
    apply: Callable[[nn.Module, AdapterParams], nn.Module]
    saves_full_model: bool
    mergeable: bool = True
    virtual_tokens: Literal["inputs", "cache"] | None = None
    batched_serving: bool = True
    gradient_checkpointing: bool = True
    peft_type: str | None = None
    parameter_groups: ParameterGroups | None = None
    load_kwargs: Callable[[AdapterParams], dict[str, Any]] | None = None
    save: Callable[[nn.Module, Path], None] | None = None
    load: Callable[[nn.Module, Path], nn.Module] | None = None
    estimate_apply: Callable[[nn.Module, AdapterParams], nn.Module] | None = None
    quantized_weight_bits: float | None = None
    shardable: bool = False

    @property
    def can_disable(self) -> bool:
        """Whether the base model's outputs are available by disabling the adapter (peft adapters)."""
        return self.peft_type is not None

    @property
    def supports_packing(self) -> bool:
        """Whether samples can be packed into shared rows (not with per-sequence virtual tokens)."""
        return self.virtual_tokens is None

    def attach(self, model: nn.Module, params: AdapterParams) -> nn.Module:
        """`apply` the adapter and record its settings on the result (see `adapter_params_of`)."""
        return remember_adapter(self.apply(model, params), params)


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")

_PARAMS_ATTRIBUTE = "tuneforge_adapter_params"


def register_adapter(name: str, spec: AdapterSpec) -> AdapterSpec:
    """Register `spec` as adapter `name`, and its parameter class for the `adapter:` config section."""
    declared = spec.params.model_fields["name"].default
    if declared != name:
        raise ValueError(f"adapter {name!r}: its params class {spec.params.__name__} declares name {declared!r}")
    ADAPTER_PARAMS.register(name)(spec.params)
    return ADAPTERS.register(name)(spec)


def remember_adapter(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Record on `model` the adapter settings it was made with (read back by `adapter_params_of`); returns it."""
    setattr(model, _PARAMS_ATTRIBUTE, params)
    return model


def adapter_params_of(model: Any) -> AdapterParams | None:
    """The adapter settings recorded on `model` by `remember_adapter`, or None."""
    params = getattr(model, _PARAMS_ATTRIBUTE, None)
    return params if isinstance(params, AdapterParams) else None


def spec_for_peft_type(peft_type: str | None) -> AdapterSpec | None:
    """The adapter that saves peft adapters of `peft_type` (e.g. "LORA", "PREFIX_TUNING"), or None."""
    name = str(peft_type or "").rsplit(".", 1)[-1]
    for adapter in ADAPTERS.names():
        spec = ADAPTERS.get(adapter)
        if spec.peft_type is not None and spec.peft_type == name:
            return spec
    return None


def adapter_of(model: Any) -> AdapterSpec | None:
    """The adapter a model carries: from its recorded settings, else from its peft type; None for a plain model."""
    params = adapter_params_of(model)
    if params is not None:
        return ADAPTERS.get(params.name)
    return spec_for_peft_type(getattr(getattr(model, "active_peft_config", None), "peft_type", None))


@contextmanager
def adapter_disabled(model: Any) -> Iterator[None]:
    """Run the base model inside: the model's peft adapter is switched off (a reference without a second copy)."""
    adapter = adapter_of(model)
    if adapter is None or not adapter.can_disable or not hasattr(model, "disable_adapter"):
        raise ValueError(f"{type(model).__name__} has no adapter that can be disabled; load a reference copy")
    with model.disable_adapter():
        yield


def prepended_tokens(model: Any) -> int:
    """Virtual tokens the model's adapter puts in front of the inputs, and so of the logits (0 for most)."""
    spec = adapter_of(model)
    if spec is None or spec.virtual_tokens != "inputs":
        return 0
    return int(model.active_peft_config.num_virtual_tokens)


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
