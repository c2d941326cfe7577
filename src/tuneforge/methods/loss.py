"""The one place token losses are computed, so every method normalises the same way."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.data.render import IGNORE_INDEX
from tuneforge.models.adapters import prepended_tokens

__all__ = ["causal_lm_loss_sum", "supervised_token_count"]


def supervised_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Number of positions whose target is supervised."""
    return int((batch["targets"] != IGNORE_INDEX).sum())


def causal_lm_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed (not averaged) cross-entropy over supervised positions.

    Callers divide by the supervised-token count of the whole optimizer step, which makes gradient
    accumulation exact: k micro-batches give the same update as one batch holding all their tokens.
    For a packed batch (one row), logits are computed only at supervised positions (`logits_to_keep`).
    The logits of virtual tokens a prompt-learning model puts in front (`prepended_tokens`) are skipped, so that
    logits and targets line up.
    """
    targets = batch["targets"]
    keep = targets != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    virtual = prepended_tokens(model)
    if targets.shape[0] == 1 and "attention_mask" not in batch:
        positions = keep[0].nonzero().squeeze(-1)
        logits = model(**inputs, use_cache=False, logits_to_keep=positions + virtual).logits[0]
        return F.cross_entropy(logits.float(), targets[0, positions], reduction="sum")
    logits = model(**inputs, use_cache=False).logits[:, virtual:]
    return F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
