"""The optimizer and the learning-rate schedule: parameter groups (weight decay, layer-wise rates) and warm-up.

Weight decay applies to weight matrices only (parameters with two or more dimensions); biases and norm scales
never decay. With `layer_lr_decay` < 1 the top decoder layer trains at the full learning rate, the layer `d` below
it at `learning_rate * layer_lr_decay ** d`, the embeddings at the lowest rate of all, and the output head (and
anything else outside the decoder layers) at the full rate. Layers are found from parameter names such as
`model.layers.3.mlp.up_proj.weight`, so full, freeze and LoRA parameters are all covered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch

from tuneforge.errors import UserError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "ParameterGroupsHook",
    "build_optimizer",
    "build_scheduler",
    "layer_count",
    "layer_lr_scale",
    "parameter_groups",
    "warmup_steps",
]

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad", "adafactor")
SCHEDULERS = ("cosine", "linear", "constant")

ParameterGroupsHook = Callable[[Any, list[torch.nn.Parameter], float, float], "list[dict[str, Any]] | None"]
"""An adapter's own groups: (model, trainable params, learning_rate, weight_decay) → groups or None."""

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:embed_tokens|embed_positions|embeddings|word_embeddings|wte|wpe)(?:\.|$)")


def layer_count(model: Any) -> int:
    """Number of decoder layers, from the highest `.layers.<i>.` index among all parameter names (0 if none)."""
    indices = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))]
    return max(indices) + 1 if indices else 0


def layer_lr_scale(name: str, num_layers: int, decay: float) -> float:
    """Learning-rate multiplier of parameter `name`: decay ** (distance from the top layer); embeddings lowest."""
    if decay == 1.0 or num_layers == 0:
        return 1.0
    match = _LAYER.search(name)
    if match:
        return decay ** (num_layers - 1 - int(match.group(1)))
    if _EMBEDDING.search(name):
        return decay**num_layers
    return 1.0


def _split_group(
    group: dict[str, Any], names: dict[int, str], num_layers: int, decay: float, learning_rate: float, wd: float
) -> list[dict[str, Any]]:
    """Split one group by (layer scale, weight decay); a group's own lr / weight_decay are kept and scaled."""
    buckets: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for param in group["params"]:
        scale = layer_lr_scale(names[id(param)], num_layers, decay)
        decay_value = group["weight_decay"] if "weight_decay" in group else (wd if param.ndim >= 2 else 0.0)
        buckets.setdefault((scale, decay_value), []).append(param)
    base_lr = group.get("lr", learning_rate)
    extra = {k: v for k, v in group.items() if k not in ("params", "lr", "weight_decay")}
    return [
        {**extra, "params": params, "lr": base_lr * scale, "weight_decay": decay_value, "lr_scale": scale}
        for (scale, decay_value), params in buckets.items()
    ]


def parameter_groups(
    model: Any,
    learning_rate: float,
    weight_decay: float,
    layer_lr_decay: float = 1.0,
    hook: ParameterGroupsHook | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters; an adapter's `hook` groups (LoRA+) win over the default one.

    Layer-wise decay multiplies every group's rate, the adapter's included.
    """
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    params = [param for _, param in named]
    groups = hook(model, params, learning_rate, weight_decay) if hook is not None else None
    if groups is None:
        groups = [{"params": params}]
    _check_cover(groups, params)
    names = {id(param): name for name, param in named}
    num_layers = layer_count(model)
    return [
        split
        for group in groups
        for split in _split_group(group, names, num_layers, layer_lr_decay, learning_rate, weight_decay)
    ]


def _check_cover(groups: list[dict[str, Any]], params: list[torch.nn.Parameter]) -> None:
    """Every trainable parameter in exactly one group."""
    grouped = [id(p) for group in groups for p in group["params"]]
    if sorted(grouped) != sorted(id(p) for p in params):
        raise ValueError("the adapter's parameter groups must hold every trainable parameter exactly once")


def build_optimizer(name: str, groups: list[dict[str, Any]], learning_rate: float) -> torch.optim.Optimizer:
    """The `train.optimizer` named `name` over `groups` (each group carries its own lr and weight_decay)."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate)
    if name == "adam":
        return torch.optim.Adam(groups, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=learning_rate)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=learning_rate)
    if name == "adafactor" and hasattr(torch.optim, "Adafactor"):
        return torch.optim.Adafactor(groups, lr=learning_rate)
    choices = [n for n in OPTIMIZERS if n != "adafactor" or hasattr(torch.optim, "Adafactor")]
    raise UserError(f"train.optimizer={name!r} is not available; choose one of {', '.join(choices)}")


def warmup_steps(total: int, ratio: float, steps: int | None) -> int:
    """Warm-up length: `steps` when set (capped at `total`), else ceil(ratio × total)."""
    if steps is not None:
        return min(steps, total)
    return math.ceil(ratio * total)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int) -> Any:
    """Linear warm-up for `warmup` steps, then cosine / linear decay to 0, or constant."""
    if kind not in SCHEDULERS:
        raise UserError(f"train.scheduler: unknown schedule {kind!r}; use one of {', '.join(SCHEDULERS)}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
