"""Supervised fine-tuning: next-token loss on assistant tokens only."""

from __future__ import annotations

import torch

from tuneforge.data.packing import collate_packed, collate_padded
from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import METHODS, Method
from tuneforge.train.loss import causal_lm_loss_sum, supervised_token_count

__all__ = ["collate_sft"]


def collate_sft(samples: list[RenderedSample], packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    """Packed (one row, position_ids per sample) or padded micro-batch."""
    return collate_packed(samples) if packing else collate_padded(samples, pad_id)


METHODS.register("sft")(Method(collate=collate_sft, loss_sum=causal_lm_loss_sum, token_count=supervised_token_count))
