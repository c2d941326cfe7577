"""The method registry: what a training method provides to the training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.render import RenderedSample
from tuneforge.registry import Registry

__all__ = ["METHODS", "Method"]


@dataclass(frozen=True)
class Method:
    """A training method.

    Attributes:
        collate: micro-batch of samples → model inputs (`packing` picks one row vs a padded batch).
        loss_sum: (model, batch) → summed loss over the batch's supervised tokens.
        token_count: batch → number of supervised tokens (the normaliser).
    """

    collate: Callable[[list[RenderedSample], bool, int], dict[str, torch.Tensor]]
    loss_sum: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]
    token_count: Callable[[dict[str, torch.Tensor]], int]


METHODS: Registry[Method] = Registry("method")
