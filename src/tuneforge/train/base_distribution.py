"""data.replay.target: distribution — record, before training, the base model's next-token distribution at every
supervised position of the replayed samples, which the loss then trains toward (see `data.soft_targets`)."""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.data.packing import collate_packed
from tuneforge.data.render import RenderedSample
from tuneforge.data.soft_targets import TOP_TOKENS, BaseDistribution
from tuneforge.methods.loss import supervised_logits
from tuneforge.progress import progress_bar
from tuneforge.train.batches import to_device
from tuneforge.train.precision import model_device
from tuneforge.train.replay import REPLAY_DATASET

__all__ = ["record_base_distributions"]


def record_base_distributions(model: Any, samples: list[RenderedSample], top: int = TOP_TOKENS) -> int:
    """Give every self-replay sample of `samples` its `base_distribution` under `model` (the base, before any
    adapter): the `top` likeliest tokens and their log-probabilities at each supervised position. Returns how many
    samples got one."""
    chosen = [s for s in samples if s.dataset == REPLAY_DATASET]
    if not chosen:
        return 0
    was_training = model.training
    model.eval()
    device = model_device(model)
    with torch.no_grad(), progress_bar("self-replay: base distributions", total=len(chosen)) as advance:
        for sample in chosen:
            sample.base_distribution = _distribution(model, sample, device, top)
            advance(1)
    model.train(was_training)
    return len(chosen)


def _distribution(model: Any, sample: RenderedSample, device: torch.device, top: int) -> BaseDistribution:
    logits, _, _ = supervised_logits(model, to_device(collate_packed([sample]), device))
    log_probs = torch.log_softmax(logits, dim=-1)
    best = log_probs.topk(min(top, log_probs.shape[-1]), dim=-1)
    return BaseDistribution(best.indices.cpu(), best.values.cpu())
