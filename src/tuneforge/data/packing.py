"""Group samples into packs and collate them into model inputs: a packed row or a padded batch.

Targets are the labels shifted by one *within each sample*, so position t holds the token that position t
predicts and a sample's last position never predicts the next sample's first token.

A packed row carries no attention mask: position_ids restart at 0 for every sample, and transformers
(`masking_utils.find_packed_sequence_indices`, used by `create_causal_mask` whenever `attention_mask` is None)
starts a new sequence wherever position_ids do not grow by exactly 1 and lets a token attend only to earlier
tokens of its own sequence, for sdpa and eager attention alike. Passing an attention mask would turn this off.
"""

from __future__ import annotations

import bisect
import heapq

import torch

from tuneforge.data.render import IGNORE_INDEX, RenderedSample

__all__ = ["best_fit_packs", "collate_packed", "collate_padded", "shifted_targets"]


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


def best_fit_packs(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: sample indices grouped into packs of at most `capacity` tokens.

    Samples go longest first (ties by index) into the open pack with the least room that still fits them (the
    lowest-numbered of those), else into a new pack. Deterministic; every index appears exactly once; a sample longer
    than `capacity` gets a pack of its own. Packs come in the order they were opened.

    Open packs are grouped by how much room they have left: a sorted list of the distinct rooms (at most `capacity`
    of them, however many packs are open) and a heap of pack numbers per room, so the work beyond sorting is linear
    in the number of samples.
    """
    if capacity < 1:
        raise ValueError(f"pack capacity must be positive, got {capacity}")
    packs: list[list[int]] = []
    rooms: list[int] = []  # the distinct amounts of free tokens that open packs have, sorted
    packs_by_room: dict[int, list[int]] = {}  # free tokens -> heap of the numbers of the packs with that much
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        slot = bisect.bisect_left(rooms, length)
        if slot < len(rooms):
            room = rooms[slot]
            waiting = packs_by_room[room]
            number = heapq.heappop(waiting)
            if not waiting:
                del packs_by_room[room]
                rooms.pop(slot)
        else:
            room, number = capacity, len(packs)
            packs.append([])
        packs[number].append(index)
        if room > length:
            left = room - length
            if left not in packs_by_room:
                packs_by_room[left] = []
                bisect.insort(rooms, left)
            heapq.heappush(packs_by_room[left], number)
    return packs


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
