"""FSDP full shard (train.fsdp, or an accelerate FSDP config): each of N processes holds 1/N of every parameter,
gradient and optimizer state of the trained model, so a model N times too large for one device trains on N.

torch's FSDP2 (`fully_shard`) does the sharding: each decoder layer is a unit whose weights are gathered whole for
its forward and backward and freed again after; embeddings, final norm and head form the root unit. Gradients are
reduce-scattered as sums (divide factor 1): the loop already divides a step's loss by the units of the whole step
on all processes, so a sharded run makes the update of a single process with the global batch, as DDP does.

Every forward gathers weights from all processes, so every process runs the same number of forward passes each
step: one with fewer rows runs filler passes whose loss is multiplied by zero (`World.fillers`). Checkpoints keep the
single-process layout — trainable weights whole, optimizer state as a full state dict keyed by parameter name —
written by rank 0 and cut into shards again on resume (same number of processes). At the end the trained weights
are gathered into a whole model on rank 0 (`whole_model`), which saves it and runs the before/after comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.methods.base import Method
from tuneforge.models.adapters import ADAPTERS, AdapterSpec
from tuneforge.models.adapters.base import find_decoder_layers
from tuneforge.train.distributed import World, is_sharded

__all__ = [
    "check_sharding",
    "full_optimizer_state",
    "full_trainable_state",
    "load_full_optimizer_state",
    "shard_model",
    "whole_model",
]


def check_sharding(world: World, config: RunConfig, method: Method, adapter: AdapterSpec) -> None:
    """Refuse, before loading anything, a sharded run of what cannot train sharded (see the registrations'
    `shardable`)."""
    if not world.sharded:
        return
    if not method.shardable:
        can = ", ".join(name for name in METHODS.names() if METHODS.get(name).shardable)
        raise UserError(
            f"method {config.method.name} cannot train sharded (FSDP): it generates text while training, and every "
            f"process must run the same forward passes. Methods that can: {can}; or launch without FSDP (DDP)"
        )
    if not adapter.shardable:
        can = ", ".join(name for name in ADAPTERS.names() if ADAPTERS.get(name).shardable)
        raise UserError(
            f"adapter {config.adapter.name} cannot train sharded (FSDP). Adapters that can: {can}; or launch "
            "without FSDP (DDP, a whole model per process)"
        )
    if config.train.ewc is not None:
        raise UserError("train.ewc cannot be combined with FSDP: launch without FSDP (DDP) or drop train.ewc")


def shard_model(model: torch.nn.Module, world: World) -> None:
    """Shard `model` in place across the processes of `world`: a unit per decoder layer plus the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))
    units = [fully_shard(layer, mesh=mesh) for layer in find_decoder_layers(model)]
    # the root too gives its weights back after each forward pass: after one without backward (validation) they
    # would otherwise stay gathered and the optimizer's shards would no longer be the model's parameters
    units.append(fully_shard(model, mesh=mesh, reshard_after_forward=True))
    for unit in units:
        unit.set_gradient_divide_factor(1.0)  # sums: the loop normalises by the units of all processes
        if hasattr(unit, "set_force_sum_reduction_for_comms"):  # newer torch; NCCL has pre-multiplied sums
            unit.set_force_sum_reduction_for_comms(True)  # plain sums (gloo has no pre-multiplied sum)


def full_trainable_state(model: torch.nn.Module, world: World) -> dict[str, torch.Tensor]:
    """The trainable parameters whole, as contiguous CPU tensors, on rank 0 ({} on the others). Collective: every
    process calls it."""
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        whole = param.full_tensor() if is_sharded(param) else param
        if world.is_main:
            state[name] = whole.detach().to("cpu", copy=True).contiguous()
    return state


def _options(**kwargs: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state whole (keyed by parameter name), on rank 0's CPU. Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Cut a whole optimizer state (`full_optimizer_state`) into this process's shards. Collective."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())


def whole_model(model: torch.nn.Module, world: World, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The trained sharded `model` as a whole model on rank 0 (None on the others): `build()` makes a fresh model of
    the same structure (the base model with its adapter), which receives every gathered weight. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    if not world.is_main:
        return None
    whole = build()
    missing, unexpected = whole.load_state_dict(state, strict=False)
    if unexpected or any(name in dict(whole.named_parameters()) for name in missing):
        raise RuntimeError(f"the gathered weights do not fit the rebuilt model: {unexpected or missing}")
    return whole
