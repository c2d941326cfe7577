"""How training data becomes steps: rows (best-fit packs or single samples), shuffled micro-batches, inputs."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import torch

from tuneforge.data.packing import best_fit_packs
from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Batch, Objective
from tuneforge.train.settings import LoopSettings

__all__ = [
    "collate_rows",
    "micro_batches",
    "plan_steps",
    "replay_rows_per_step",
    "replay_step_groups",
    "step_groups",
    "to_device",
    "token_total",
    "training_rows",
]


def training_rows(samples: list[RenderedSample], settings: LoopSettings) -> list[list[int]]:
    """Sample indices of each row: best-fit packs of at most `cutoff_len` tokens, or one sample per row."""
    if not settings.packing:
        return [[index] for index in range(len(samples))]
    return best_fit_packs([sample.total_tokens for sample in samples], settings.cutoff_len)


def replay_rows_per_step(settings: LoopSettings) -> int:
    """How many of a step's rows come from the replay data (train.replay): the share, at least 1, never all."""
    if settings.replay_share <= 0:
        return 0
    per_step = settings.batch_size * settings.grad_accum
    return min(per_step - 1, max(1, round(settings.replay_share * per_step)))


def plan_steps(num_rows: int, settings: LoopSettings) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for `num_rows` rows per epoch (see `training_rows`)."""
    replayed = replay_rows_per_step(settings)
    if replayed:
        per_epoch = math.ceil(num_rows / (settings.batch_size * settings.grad_accum - replayed))
    else:
        per_epoch = math.ceil(math.ceil(num_rows / settings.batch_size) / settings.grad_accum)
    total = settings.max_steps if settings.max_steps > 0 else max(1, math.ceil(settings.epochs * per_epoch))
    return per_epoch, total


def micro_batches(rows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups of `batch_size` rows."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def step_groups(
    rows: list[list[int]], settings: LoopSettings, epoch: int = 0, index: int = 0
) -> Iterator[tuple[int, int, list[list[list[int]]]]]:
    """Endless (epoch, step index in epoch, [micro-batch of rows]) from a data position onwards.

    The rows are reshuffled each epoch with seed + epoch, so a position (epoch, index) fixes all that follows.
    """
    while True:
        order = list(rows)
        random.Random(settings.seed + epoch).shuffle(order)
        micro = micro_batches(order, settings.batch_size)
        starts = range(0, len(micro), settings.grad_accum)
        for position, start in enumerate(starts):
            if position >= index:
                yield epoch, position, micro[start : start + settings.grad_accum]
        epoch, index = epoch + 1, 0


def replay_step_groups(
    rows: list[list[int]], replay: list[list[int]], settings: LoopSettings, epoch: int = 0, index: int = 0
) -> Iterator[tuple[int, int, list[list[list[int]]]]]:
    """Like `step_groups`, with `replay_rows_per_step` rows of every step drawn from `replay` (train.replay).

    The replay rows run through their own seeded order, continuing where the previous step stopped, so a data
    position (epoch, index) still fixes all that follows; within a step the rows are shuffled together.
    """
    replayed = replay_rows_per_step(settings)
    fresh = settings.batch_size * settings.grad_accum - replayed
    while True:
        order = list(rows)
        random.Random(settings.seed + epoch).shuffle(order)
        replay_order = list(replay)
        random.Random(settings.seed + 7919 * (epoch + 1)).shuffle(replay_order)
        for position in range(index, math.ceil(len(order) / fresh)):
            step_rows = order[position * fresh : (position + 1) * fresh]
            step_rows += [replay_order[(position * replayed + j) % len(replay_order)] for j in range(replayed)]
            random.Random(settings.seed + 104729 * epoch + position).shuffle(step_rows)
            yield epoch, position, micro_batches(step_rows, settings.batch_size)
        epoch, index = epoch + 1, 0


def collate_rows(
    objective: Objective, samples: list[RenderedSample], micro: list[list[int]], settings: LoopSettings
) -> list[Batch]:
    """Forward-pass inputs of one micro-batch: one packed row per pack, or one padded batch of samples."""
    if settings.packing:
        return [objective.collate([samples[i] for i in row], True, settings.pad_id) for row in micro]
    return [objective.collate([samples[i] for row in micro for i in row], False, settings.pad_id)]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors moved to `device`."""
    return {key: value.to(device) for key, value in batch.items()}


def token_total(samples: list[RenderedSample], group: list[list[list[int]]]) -> int:
    """Tokens of the samples in `group`, padding excluded."""
    return sum(samples[i].total_tokens for micro in group for row in micro for i in row)
