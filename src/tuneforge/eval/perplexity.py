"""Validation loss and perplexity of a model on a dataset (the supervised tokens the data layer marks)."""

from __future__ import annotations

import math
from typing import Any

import torch

from tuneforge.data.packing import collate_packed
from tuneforge.data.render import RenderedSample
from tuneforge.methods.loss import causal_lm_loss_sum, supervised_token_count
from tuneforge.progress import progress_bar

__all__ = ["loss_and_perplexity"]


@torch.inference_mode()
def loss_and_perplexity(model: Any, samples: list[RenderedSample]) -> dict[str, float]:
    """Mean loss per supervised token over `samples` (each run alone, so nothing interacts), and exp(loss)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with progress_bar("loss", total=len(samples)) as advance:
        for sample in samples:
            batch = {k: v.to(model.device) for k, v in collate_packed([sample]).items()}
            total += float(causal_lm_loss_sum(model, batch))
            tokens += supervised_token_count(batch)
            advance(1)
    model.train(was_training)
    loss = total / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "samples": len(samples), "tokens": tokens}
