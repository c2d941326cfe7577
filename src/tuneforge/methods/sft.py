"""Supervised fine-tuning: next-token loss on the supervised (assistant, or every raw-text) tokens."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.config.schema import MethodParams
from tuneforge.data.packing import collate_packed, collate_padded
from tuneforge.data.render import RenderedSample
from tuneforge.data.soft_targets import distribution_batch
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.loss import causal_lm_loss_sum, supervised_token_count

__all__ = ["SftParams", "collate_sft", "sft_loss"]


class SftParams(MethodParams):
    """`method: {name: sft}`: no parameters of its own (data, adapter and train sections configure it)."""

    name: Literal["sft"] = Field("sft", description="Training method.")


def collate_sft(samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
    """Packed (one row, position_ids per sample) or padded micro-batch; with the base distributions replayed
    samples carry (data.replay.target: distribution) as `distribution_batch` places them."""
    batch = collate_packed(samples) if packing else collate_padded(samples, pad_id)
    batch.update(distribution_batch(samples))
    return batch


def sft_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Summed cross-entropy over the supervised tokens."""
    return LossSums(causal_lm_loss_sum(model, batch), {})


register_method(
    "sft",
    Method(
        params=SftParams,
        data_kinds=frozenset({"chat", "text"}),
        collate=collate_sft,
        loss=sft_loss,
        count=supervised_token_count,
        trains_on_distribution=True,
    ),
)
