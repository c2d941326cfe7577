"""Continued pretraining / domain adaptation: next-token loss on every token of raw text.

`method: {name: pretrain}` trains on `.txt` files (one document per line) and rows with a `text` field. Each
document is BOS + text + EOS, best-fit packed into rows of `data.cutoff_len` tokens (attention never crosses
documents), and every token is supervised. Conversations are refused: render them with `sft`, or write them out
as plain text first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.schema import MethodParams
from tuneforge.methods.base import Method, register_method
from tuneforge.methods.loss import supervised_token_count
from tuneforge.methods.sft import collate_sft, sft_loss

__all__ = ["PretrainParams"]


class PretrainParams(MethodParams):
    """`method: {name: pretrain}`: no parameters of its own."""

    name: Literal["pretrain"] = Field("pretrain", description="Training method.")


register_method(
    "pretrain",
    Method(
        params=PretrainParams,
        data_kinds=frozenset({"text"}),
        collate=collate_sft,
        loss=sft_loss,
        count=supervised_token_count,
    ),
)
