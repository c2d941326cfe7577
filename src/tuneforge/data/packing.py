"""Collate rendered samples into model inputs: packed (one row, no padding) or padded.

Targets are the labels shifted by one *within each sample*, so position t holds the token that position t
predicts and a sample's last position never predicts the next sample's first token.
"""

from __future__ import annotations

import torch

from tuneforge.data.render import IGNORE_INDEX, RenderedSample

__all__ = ["collate_packed", "collate_padded", "shifted_targets"]


def shifted_targets(labels: list[int]) -> list[int]:
    """labels[1:] + [IGNORE_INDEX]: what each position must predict."""
    return labels[1:] + [IGNORE_INDEX]


def collate_packed(samples: list[RenderedSample]) -> dict[str, torch.Tensor]:
    """One row holding every sample; position_ids restart at 0 per sample so attention stays inside samples."""
    input_ids: list[int] = []
    position_ids: list[int] = []
    targets: list[int] = []
    for sample in samples:
        input_ids += sample.input_ids
        position_ids += range(len(sample.input_ids))
        targets += shifted_targets(sample.labels)
    return {
        "input_ids": torch.tensor([input_ids]),
        "position_ids": torch.tensor([position_ids]),
        "targets": torch.tensor([targets]),
    }


def collate_padded(samples: list[RenderedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch with an attention mask (for adapters that cannot use packing)."""
    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    targets = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        length = len(sample.input_ids)
        input_ids[row, :length] = torch.tensor(sample.input_ids)
        attention_mask[row, :length] = 1
        targets[row, :length] = torch.tensor(shifted_targets(sample.labels))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets}
