"""The base model's next-token distribution a replayed sample trains toward (data.replay.target: distribution),
its place in a micro-batch, and the loss against it.

A sample's distribution has one row per supervised position, in order: the `TOP_TOKENS` likeliest token ids and
their log-probabilities under the base model; the probability left over is one more share (every other token
together). The loss at such a position is the cross-entropy of the model's distribution against the base's over
those TOP_TOKENS + 1 outcomes: the KL divergence from the base plus a constant, so its gradient pulls the whole
distribution toward the base, not only the one sampled token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = [
    "SOFT_KEYS",
    "TOP_TOKENS",
    "BaseDistribution",
    "CarriesDistribution",
    "distribution_batch",
    "distribution_loss",
]

TOP_TOKENS = 64
SOFT_KEYS = ("soft_positions", "soft_ids", "soft_log_probs")


@dataclass(frozen=True)
class BaseDistribution:
    """`ids` [supervised positions, k] (long) and their base-model `log_probs` (float32), one row per position."""

    ids: torch.Tensor
    log_probs: torch.Tensor


class CarriesDistribution(Protocol):
    """What `distribution_batch` reads of a sample (a `RenderedSample`)."""

    base_distribution: BaseDistribution | None

    @property
    def supervised_targets(self) -> int: ...


def distribution_batch(samples: Sequence[CarriesDistribution]) -> dict[str, torch.Tensor]:
    """The SOFT_KEYS of a micro-batch: where, among its supervised target positions (samples in order, each
    sample's positions in order), the samples carrying a `base_distribution` sit, and their distributions. {} when
    none do."""
    positions: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    log_probs: list[torch.Tensor] = []
    offset = 0
    for sample in samples:
        count = sample.supervised_targets
        distribution = sample.base_distribution
        if distribution is not None:
            if distribution.ids.shape[0] != count:
                raise ValueError(f"base distribution has {distribution.ids.shape[0]} rows for {count} positions")
            positions.append(torch.arange(offset, offset + count))
            ids.append(distribution.ids)
            log_probs.append(distribution.log_probs)
        offset += count
    if not positions:
        return {}
    return {
        "soft_positions": torch.cat(positions),
        "soft_ids": torch.cat(ids),
        "soft_log_probs": torch.cat(log_probs),
    }


def distribution_loss(logits: torch.Tensor, ids: torch.Tensor, base_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy of `logits` [n, vocab] against the base distribution given by its top `ids` and
    `base_log_probs` [n, k], with the rest of each distribution's probability as one more outcome."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    top = log_q.gather(-1, ids)
    rest = torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), dim=-1)
    p = base_log_probs.exp()
    p_rest = (1.0 - p.sum(-1)).clamp_min(0.0)
    return -(p * top).sum(-1) - p_rest * rest
