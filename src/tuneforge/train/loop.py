"""The optimisation loop: micro-batches, exact token-normalised gradient accumulation, schedule, validation.

A micro-batch holds `batch_size` rows; the order of the rows is reshuffled every epoch. Without packing a row is
one sample and a micro-batch is one padded forward pass. With packing a row is a pack: samples grouped once by
best fit into at most `cutoff_len` tokens, laid out end to end with position_ids restarting per sample, and every
pack is a forward pass of its own: no padding, memory bounded by one pack, logits only at supervised positions.
Each optimizer step still divides by the supervised tokens of all its forward passes, so the update is exact.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.packing import best_fit_packs
from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Method
from tuneforge.train.callbacks import MetricsLog, check_finite
from tuneforge.train.progress import progress_bar

__all__ = [
    "LoopResult",
    "LoopSettings",
    "build_scheduler",
    "evaluate_loss",
    "plan_steps",
    "train_loop",
    "training_rows",
]


@dataclass(frozen=True)
class LoopSettings:
    """Everything the loop needs, as plain values (built from the train and data config sections).

    `cutoff_len` is the capacity of a pack in tokens when `packing` is on.
    """

    learning_rate: float
    epochs: float
    max_steps: int
    batch_size: int
    grad_accum: int
    max_grad_norm: float
    scheduler: str
    warmup_ratio: float
    weight_decay: float
    seed: int
    eval_steps: int | None
    logging_steps: int
    packing: bool
    pad_id: int
    cutoff_len: int = 512


@dataclass
class LoopResult:
    steps: int
    epochs: float
    final_loss: float
    final_val_loss: float | None
    tokens_per_s: float
    seconds: float


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


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int) -> Any:
    """Linear warm-up for `warmup` steps, then cosine / linear decay to 0, or constant."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _micro_batches(rows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups of `batch_size` rows."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def _step_groups(rows: list[list[int]], settings: LoopSettings) -> Iterator[tuple[int, list[list[list[int]]]]]:
    """Endless (epoch, [micro-batch of rows]) groups; the rows are reshuffled each epoch with seed + epoch."""
    epoch = 0
    while True:
        order = list(rows)
        random.Random(settings.seed + epoch).shuffle(order)
        micro = _micro_batches(order, settings.batch_size)
        for start in range(0, len(micro), settings.grad_accum):
            yield epoch, micro[start : start + settings.grad_accum]
        epoch += 1


def _collate(
    method: Method, samples: list[RenderedSample], micro: list[list[int]], settings: LoopSettings
) -> list[dict[str, torch.Tensor]]:
    """Forward-pass inputs of one micro-batch: one packed row per pack, or one padded batch of samples."""
    if settings.packing:
        return [method.collate([samples[i] for i in row], True, settings.pad_id) for row in micro]
    return [method.collate([samples[i] for row in micro for i in row], False, settings.pad_id)]


def _token_total(samples: list[RenderedSample], group: list[list[list[int]]]) -> int:
    """Tokens of the samples in `group`, padding excluded."""
    return sum(len(samples[i].input_ids) for micro in group for row in micro for i in row)


@torch.no_grad()
def evaluate_loss(model: Any, method: Method, samples: list[RenderedSample], settings: LoopSettings) -> float | None:
    """Mean loss per supervised token over `samples` (None when there are none)."""
    if not samples:
        return None
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for micro in _micro_batches(training_rows(samples, settings), settings.batch_size):
        for batch in _collate(method, samples, micro, settings):
            total += float(method.loss_sum(model, batch))
            tokens += method.token_count(batch)
    model.train(was_training)
    return total / max(tokens, 1)


def _optimizer_step(
    model: Any, method: Method, batches: list[dict[str, torch.Tensor]], settings: LoopSettings, step: int
) -> tuple[float, float]:
    """Forward/backward every micro-batch, normalised by the step's total supervised tokens; returns (loss, norm)."""
    tokens = sum(method.token_count(b) for b in batches)
    loss_total = 0.0
    for batch in batches:
        loss = method.loss_sum(model, batch) / max(tokens, 1)
        loss.backward()
        loss_total += float(loss.detach())
    check_finite(loss_total, "training loss", step)
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    check_finite(norm, "gradient norm", step)
    return loss_total, norm


def train_loop(
    model: Any,
    method: Method,
    train: list[RenderedSample],
    val: list[RenderedSample],
    settings: LoopSettings,
    log: MetricsLog,
    on_eval: Any = None,
) -> LoopResult:
    """Train `model` in place; metrics go to `log`; `on_eval()` runs after each validation (e.g. re-plot)."""
    rows = training_rows(train, settings)
    per_epoch, total = plan_steps(len(rows), settings)
    eval_every = settings.eval_steps or max(1, total // 5)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = build_scheduler(optimizer, settings.scheduler, math.ceil(settings.warmup_ratio * total), total)
    model.train()
    groups = _step_groups(rows, settings)
    seen_tokens, train_seconds, loss, val_loss = 0, 0.0, float("nan"), None
    with progress_bar("training", total=total) as advance:
        for step in range(1, total + 1):
            _, group = next(groups)
            started = time.perf_counter()
            batches = [batch for micro in group for batch in _collate(method, train, micro, settings)]
            loss, norm = _optimizer_step(model, method, batches, settings, step)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_seconds += time.perf_counter() - started
            seen_tokens += _token_total(train, group)
            record: dict[str, Any] = {
                "step": step,
                "epoch": round(step / per_epoch, 3),
                "loss": loss,
                "lr": lr,
                "grad_norm": norm,
                "tokens_per_s": seen_tokens / train_seconds,
            }
            if step % eval_every == 0 or step == total:
                val_loss = evaluate_loss(model, method, val, settings)
                record["val_loss"] = val_loss
            if step % settings.logging_steps == 0 or "val_loss" in record:
                log.write(**record)
            if "val_loss" in record and on_eval is not None:
                on_eval()
            info = f"loss {loss:.3f}" + (f" val {val_loss:.3f}" if val_loss is not None else "")
            advance(1, info=f"{info} lr {lr:.1e} {seen_tokens / train_seconds:.0f} tok/s")
    return LoopResult(total, total / per_epoch, loss, val_loss, seen_tokens / max(train_seconds, 1e-9), train_seconds)
