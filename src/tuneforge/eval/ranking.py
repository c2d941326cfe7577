"""A reward model's ranking of preference pairs: how often it scores the chosen answer above the rejected one."""

from __future__ import annotations

from typing import Any

from tuneforge.data.messages import Conversation
from tuneforge.methods.reward import RewardModel

__all__ = ["rank_pairs"]


def rank_pairs(scorer: RewardModel, pairs: list[Conversation], batch_size: int = 8) -> dict[str, Any]:
    """Ranking accuracy (chosen scored higher) and the mean score margin over preference `pairs`."""
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompts = [pair.to_template() for pair in chunk]
        chosen += scorer.score([[*p, pair.chosen.to_template()] for p, pair in zip(prompts, chunk, strict=True)])
        rejected += scorer.score([[*p, pair.rejected.to_template()] for p, pair in zip(prompts, chunk, strict=True)])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = max(len(margins), 1)
    return {
        "pairs": len(margins),
        "accuracy": sum(m > 0 for m in margins) / n,
        "margin": sum(margins) / n,
        "mean_chosen": sum(chosen) / n,
        "mean_rejected": sum(rejected) / n,
    }
