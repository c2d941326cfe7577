"""One optimizer step and one validation pass, with exact token-normalised gradient accumulation.

Every micro-batch's loss and metrics are sums over its units (supervised tokens for SFT, pairs for preference
methods); a step divides them by the units of all its micro-batches, so k micro-batches give the same update as
one batch holding all of them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Batch, Metric, Objective
from tuneforge.train.batches import collate_rows, micro_batches, to_device, training_rows
from tuneforge.train.callbacks import check_finite
from tuneforge.train.distributed import World
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

    def merge(self, parts: list[tuple[dict[str, float], dict[str, float]]]) -> None:
        """Add (sums, weights) of other totals, e.g. those of every process of a data-parallel run."""
        for sums, weights in parts:
            for name, total in sums.items():
                self.sums[name] = self.sums.get(name, 0.0) + total
            for name, weight in weights.items():
                self.weights[name] = self.weights.get(name, 0.0) + weight

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
    world: World | None = None,
) -> Evaluation | None:
    """Mean loss (and metrics) per unit over `samples` (None when there are none).

    Samples of different datasets are evaluated apart (never in one pack), so each dataset's loss is known too.
    In a data-parallel run (`world`) each process evaluates every size-th micro-batch and the sums are combined.
    """
    if not samples:
        return None
    world = world or World()
    was_training = model.training
    model.eval()
    device = model_device(model)
    sums: dict[str, tuple[float, int]] = {}
    metrics = _MetricTotals()
    for task, group in _by_dataset(samples).items():
        task_total, task_units = 0.0, 0
        micros = micro_batches(training_rows(group, settings), settings.batch_size)
        batches = [
            batch for micro in world.every_nth(micros) for batch in collate_rows(objective, group, micro, settings)
        ]
        filler = collate_rows(objective, group, micros[0][:1], settings)[:1] * world.fillers(len(batches))
        for batch in filler:  # a sharded run's passes that keep the processes in step
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                objective.loss(model, to_device(batch, device))
        for batch in batches:
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                loss_sums = objective.loss(model, to_device(batch, device))
            task_total += float(loss_sums.loss)
            metrics.add(loss_sums.metrics)
            task_units += objective.count(batch)
        sums[task] = (task_total, task_units)
    model.train(was_training)
    if world.parallel:
        parts = world.gather((sums, metrics.sums, metrics.weights))
        sums = {task: (sum(p[0][task][0] for p in parts), sum(p[0][task][1] for p in parts)) for task in sums}
        metrics = _MetricTotals()
        metrics.merge([(p[1], p[2]) for p in parts])
    per_task = {task: total / max(units, 1) for task, (total, units) in sums.items()}
    total = sum(total for total, _ in sums.values())
    units = sum(units for _, units in sums.values())
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
    world: World | None = None,
    fillers: Sequence[Batch] = (),
) -> StepResult:
    """Forward/backward every micro-batch, normalised by the step's total units; clip and return what it measured.

    A `regularizer` (e.g. EWC) adds its penalty once per step; the reported loss includes it and `penalty` says
    how much of it there was.

    In a data-parallel run (`world`) `batches` are this process's share of the step: the units are counted over
    all processes and the gradients summed across them, so the update is the one a single process would make
    with all the step's batches; the method's carried state (e.g. PPO's KL coefficient) is averaged over them.

    With loss scaling (fp16) the gradients are unscaled before clipping and an overflowing norm is left to the
    scaler, which skips that update. The optimizer itself is stepped by the caller.

    `fillers`: a sharded run's extra passes for a process with fewer batches than the others (their loss counts
    zero), so that every process runs as many forward and backward passes.
    """
    amp = amp or Amp(Precision("fp32", "cpu"))
    world = world or World()
    units = max(int(world.total([sum(objective.count(b) for b in batches)])[0]), 1)
    loss_total, metrics = 0.0, _MetricTotals()
    for batch in batches:
        with amp.precision.autocast():
            sums = objective.loss(model, batch)
            loss = sums.loss / units
        amp.backward(loss)
        loss_total += float(loss.detach())
        metrics.add(sums.metrics)
    for batch in fillers:
        with amp.precision.autocast():
            filler_loss = objective.loss(model, batch).loss * 0.0
        amp.backward(filler_loss)
    if world.parallel:
        loss_total, metrics = _combine(world, loss_total, metrics, objective)
    extra: dict[str, float] = {}
    if regularizer is not None:
        with amp.precision.autocast():
            penalty = regularizer(model)
        amp.backward(penalty / world.size if world.parallel else penalty)  # once per step, over all processes
        loss_total += float(penalty.detach())
        extra["penalty"] = float(penalty.detach())
    check_finite(loss_total, "training loss", step)
    params = [p for p in model.parameters() if p.requires_grad]
    world.sum_gradients(params)
    if optimizer is not None:
        amp.unscale(optimizer)
    max_norm = settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a sharded run's norm is a DTensor
    if amp.scaler is None:
        check_finite(norm, "gradient norm", step)
    return StepResult(loss_total, norm, {**metrics.means(units), **extra})


def _combine(world: World, loss: float, metrics: _MetricTotals, objective: Objective) -> tuple[float, _MetricTotals]:
    """The step's loss and metric sums over all processes; the method's carried state averaged over them."""
    state = objective.models.state
    parts = world.gather((loss, metrics.sums, metrics.weights, dict(state)))
    combined = _MetricTotals()
    combined.merge([(p[1], p[2]) for p in parts])
    for name in {name for p in parts for name in p[3]}:
        values = [p[3][name] for p in parts if name in p[3]]
        state[name] = sum(values) / len(values)
    return sum(p[0] for p in parts), combined


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
