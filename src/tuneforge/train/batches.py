"""How training data becomes steps: rows (best-fit packs or single samples), shuffled micro-batches, inputs."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from tuneforge.data.packing import best_fit_packs
from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Method

if TYPE_CHECKING:
    from tuneforge.train.loop import LoopSettings

__all__ = ["plan_steps", "training_rows"]


def training_rows(samples: list[RenderedSample], settings: LoopSettings) -> list[list[int]]:
    """Sample indices of each row: best-fit packs of at most `cutoff_len` tokens, or one sample per row."""
    if not settings.packing:
        return [[index] for index in range(len(samples))]
    return best_fit_packs([len(sample.input_ids) for sample in samples], settings.cutoff_len)


def plan_steps(num_rows: int, settings: LoopSettings) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for `num_rows` rows per epoch (see `training_rows`)."""
    micro_batches = math.ceil(num_rows / settings.batch_size)
    per_epoch = math.ceil(micro_batches / settings.grad_accum)
    total = settings.max_steps if settings.max_steps > 0 else max(1, math.ceil(settings.epochs * per_epoch))
    return per_epoch, total


def _micro_batches(rows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups of `batch_size` rows."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def _positioned_groups(
    rows: list[list[int]], settings: LoopSettings, epoch: int = 0, index: int = 0
) -> Iterator[tuple[int, int, list[list[list[int]]]]]:
    """Endless (epoch, step index in epoch, [micro-batch of rows]) from a data position onwards.

    The rows are reshuffled each epoch with seed + epoch, so a position (epoch, index) fixes all that follows.
    """
    while True:
        order = list(rows)
        random.Random(settings.seed + epoch).shuffle(order)
        micro = _micro_batches(order, settings.batch_size)
        starts = range(0, len(micro), settings.grad_accum)
        for position, start in enumerate(starts):
            if position >= index:
                yield epoch, position, micro[start : start + settings.grad_accum]
        epoch, index = epoch + 1, 0


def _step_groups(rows: list[list[int]], settings: LoopSettings) -> Iterator[tuple[int, list[list[list[int]]]]]:
    """Endless (epoch, [micro-batch of rows]) groups; the rows are reshuffled each epoch with seed + epoch."""
    for epoch, _, group in _positioned_groups(rows, settings):
        yield epoch, group


def _collate(
    method: Method, samples: list[RenderedSample], micro: list[list[int]], settings: LoopSettings
) -> list[dict[str, torch.Tensor]]:
    """Forward-pass inputs of one micro-batch: one packed row per pack, or one padded batch of samples."""
    if settings.packing:
        return [method.collate([samples[i] for i in row], True, settings.pad_id) for row in micro]
    return [method.collate([samples[i] for row in micro for i in row], False, settings.pad_id)]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _token_total(samples: list[RenderedSample], group: list[list[list[int]]]) -> int:
    """Tokens of the samples in `group`, padding excluded."""
    return sum(len(samples[i].input_ids) for micro in group for row in micro for i in row)
