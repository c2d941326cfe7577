"""One optimizer step and one validation pass, with exact token-normalised gradient accumulation.

Every micro-batch's loss and metrics are sums over its units (supervised tokens for SFT, pairs for preference
methods); a step divides them by the units of all its micro-batches, so k micro-batches give the same update as
one batch holding all of them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Batch, Metric, Objective
from tuneforge.train.batches import collate_rows, micro_batches, to_device, training_rows
from tuneforge.train.callbacks import check_finite
from tuneforge.train.precision import (
    Amp,
    Precision,
    compute_precision,
    enable_gradient_checkpointing,
    model_device,
    resolve_gradient_checkpointing,
    resolve_precision,
    upcast_trainable,
)
from tuneforge.train.settings import LoopSettings

__all__ = [
    "STOP_SIGNALS",
    "Evaluation",
    "StepResult",
    "StopRequest",
    "evaluate",
    "optimizer_step",
    "prepare_model",
    "stop_requests",
    "terminate_as_interrupt",
]


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step measured: mean loss per unit, gradient norm, the method's mean metrics."""

    loss: float
    grad_norm: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """Mean validation loss per unit, the method's mean metrics, and with several datasets (tasks) the loss of
    each, by dataset name."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    per_task: dict[str, float] = field(default_factory=dict)


class _MetricTotals:
    """Running sums of a method's metrics: plain values per unit, (sum, weight) pairs by their own weights."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, metrics: dict[str, Metric]) -> None:
        for name, value in metrics.items():
            total, weight = value if isinstance(value, tuple) else (value, None)
            self.sums[name] = self.sums.get(name, 0.0) + float(total)
            if weight is not None:
                self.weights[name] = self.weights.get(name, 0.0) + float(weight)

    def means(self, units: int) -> dict[str, float]:
        """Each metric's mean: per unit, or per its own weight (metrics whose weight is 0 are left out)."""
        out = {}
        for name, total in self.sums.items():
            weight = self.weights[name] if name in self.weights else float(max(units, 1))
            if weight > 0:
                out[name] = total / weight
        return out


@torch.no_grad()
def evaluate(
    model: Any,
    objective: Objective,
    samples: list[RenderedSample],
    settings: LoopSettings,
    precision: Precision | None = None,
) -> Evaluation | None:
    """Mean loss (and metrics) per unit over `samples` (None when there are none).

    Samples of different datasets are evaluated apart (never in one pack), so each dataset's loss is known too.
    """
    if not samples:
        return None
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, units, metrics, per_task = 0.0, 0, _MetricTotals(), {}
    for task, group in _by_dataset(samples).items():
        task_total, task_units = 0.0, 0
        for micro in micro_batches(training_rows(group, settings), settings.batch_size):
            for batch in collate_rows(objective, group, micro, settings):
                with precision.autocast() if precision is not None else contextlib.nullcontext():
                    sums = objective.loss(model, to_device(batch, device))
                task_total += float(sums.loss)
                metrics.add(sums.metrics)
                task_units += objective.count(batch)
        per_task[task] = task_total / max(task_units, 1)
        total, units = total + task_total, units + task_units
    model.train(was_training)
    return Evaluation(total / max(units, 1), metrics.means(units), per_task if len(per_task) > 1 else {})


def _by_dataset(samples: list[RenderedSample]) -> dict[str, list[RenderedSample]]:
    """The samples grouped by their dataset name, in order of first appearance."""
    groups: dict[str, list[RenderedSample]] = {}
    for sample in samples:
        groups.setdefault(sample.dataset or "data", []).append(sample)
    return groups


def optimizer_step(
    model: Any,
    objective: Objective,
    batches: list[Batch],
    settings: LoopSettings,
    step: int,
    amp: Amp | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    regularizer: Callable[[Any], torch.Tensor] | None = None,
) -> StepResult:
    """Forward/backward every micro-batch, normalised by the step's total units; clip and return what it measured.

    A `regularizer` (e.g. EWC) adds its penalty once per step; the reported loss includes it and `penalty` says
    how much of it there was.

    With loss scaling (fp16) the gradients are unscaled before clipping and an overflowing norm is left to the
    scaler, which skips that update. The optimizer itself is stepped by the caller.
    """
    amp = amp or Amp(Precision("fp32", "cpu"))
    units = max(sum(objective.count(b) for b in batches), 1)
    loss_total, metrics = 0.0, _MetricTotals()
    for batch in batches:
        with amp.precision.autocast():
            sums = objective.loss(model, batch)
            loss = sums.loss / units
        amp.backward(loss)
        loss_total += float(loss.detach())
        metrics.add(sums.metrics)
    extra: dict[str, float] = {}
    if regularizer is not None:
        with amp.precision.autocast():
            penalty = regularizer(model)
        amp.backward(penalty)
        loss_total += float(penalty.detach())
        extra["penalty"] = float(penalty.detach())
    check_finite(loss_total, "training loss", step)
    if optimizer is not None:
        amp.unscale(optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if amp.scaler is None:
        check_finite(norm, "gradient norm", step)
    return StepResult(loss_total, norm, {**metrics.means(units), **extra})


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop was asked for (call it), and by which signal (`signal_name`, e.g. SIGTERM)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name = "SIGINT"

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self, signal_name: str) -> None:
        """Record a stop request from `signal_name`."""
        self.signal_name = signal_name
        self._event.set()


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Yield a StopRequest: the first Ctrl-C (SIGINT) or SIGTERM only sets it, so that the loop can end its step
    and save a checkpoint; a second one interrupts at once."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request():
            raise KeyboardInterrupt(signal.Signals(signum).name)
        request.set(signal.Signals(signum).name)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM interrupts like Ctrl-C (KeyboardInterrupt), so that the run records how it ended
    instead of vanishing; the training loop itself turns both into a clean stop (`stop_requests`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_model(model: Any, settings: LoopSettings) -> Amp:
    """float32 master weights, gradient checkpointing if asked, and the step's autocast / loss scaling."""
    precision = compute_precision(resolve_precision(settings.dtype, model_device(model)), model)
    upcast_trainable(model)
    if resolve_gradient_checkpointing(settings.gradient_checkpointing, model):
        enable_gradient_checkpointing(model)
    return Amp.create(precision)
