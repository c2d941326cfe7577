"""Elastic weight consolidation (Kirkpatrick et al. 2017): keep the weights that general data needs near their old
values while the model learns something new.

Before training, the diagonal of the empirical Fisher information of every trainable parameter is estimated on a
general dataset (mean squared gradient of the per-token loss over its samples), and the starting weights are kept
as the anchor. Every optimizer step then adds λ/2 · Σ F_i (θ_i - θ*_i)² to the loss: a parameter that matters for
the general data (large F) is pulled back towards its old value, the others move freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.messages import RowError
from tuneforge.data.packing import collate_packed
from tuneforge.data.quality import DataReport
from tuneforge.data.render import RenderedSample, render_sample
from tuneforge.methods.loss import causal_lm_loss_sum, supervised_token_count
from tuneforge.paths import replay_cache_dir
from tuneforge.progress import progress_bar
from tuneforge.train.batches import to_device
from tuneforge.train.precision import model_device
from tuneforge.train.replay import replay_conversations

__all__ = ["ElasticWeights", "estimate_fisher", "general_samples"]


def general_samples(
    loaded: Any, prompts: str, samples: int, max_new_tokens: int, cutoff_len: int, model_id: str, base_dir: Path | None
) -> list[RenderedSample]:
    """The base model's own answers to general prompts (cached like self-replay), rendered for the Fisher estimate.

    Call it before the adapter is applied: the answers are the old model's behaviour to keep.
    """
    report = DataReport()
    conversations = replay_conversations(
        loaded.model,
        loaded.tokenizer,
        model_id,
        prompts,
        max_new_tokens,
        samples,
        report,
        replay_cache_dir(),
        base_dir,
        trim=False,
    )
    rendered = []
    for conversation in conversations:
        try:
            rendered.append(render_sample(loaded.tokenizer, conversation, cutoff_len))
        except RowError:
            continue  # an answer cut to nothing: it carries no information about what to keep
    return rendered


def estimate_fisher(model: Any, samples: list[RenderedSample]) -> dict[str, torch.Tensor]:
    """Mean squared gradient of each sample's per-token loss, for every trainable parameter (diagonal Fisher)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = model.training
    model.eval()
    device = model_device(model)
    with progress_bar("EWC: Fisher information", total=len(samples)) as advance:
        for sample in samples:
            model.zero_grad(set_to_none=True)
            batch = to_device(collate_packed([sample]), device)
            loss = causal_lm_loss_sum(model, batch) / max(supervised_token_count(batch), 1)
            loss.backward()
            for name, param in params.items():
                if param.grad is not None:
                    fisher[name] += param.grad.detach().float() ** 2
            advance(1)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: value / max(len(samples), 1) for name, value in fisher.items()}


@dataclass
class ElasticWeights:
    """The EWC penalty: `weight` (λ), the Fisher diagonal and the anchor (the weights before training)."""

    weight: float
    fisher: dict[str, torch.Tensor]
    anchor: dict[str, torch.Tensor]

    @classmethod
    def from_model(cls, model: Any, samples: list[RenderedSample], weight: float) -> ElasticWeights:
        """Estimate the Fisher diagonal on `samples` and anchor at the model's current trainable weights."""
        fisher = estimate_fisher(model, samples)
        anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return cls(weight, fisher, anchor)

    def penalty(self, model: Any) -> torch.Tensor:
        """λ/2 · Σ F (θ - θ*)² over the trainable parameters (differentiable)."""
        total = torch.zeros((), device=model_device(model))
        for name, param in model.named_parameters():
            if name in self.fisher:
                diff = param.float() - self.anchor[name].to(param.device, torch.float32)
                total = total + (self.fisher[name].to(param.device) * diff**2).sum()
        return 0.5 * self.weight * total
