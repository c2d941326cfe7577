"""What the training loop is given besides model, method and data (`LoopContext`), what it keeps as it goes
(`LoopState`, saved in checkpoints) and how it ends (`LoopResult`, or `TrainingInterrupted`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.render import RenderedSample
from tuneforge.train.checkpoint import CheckpointStore
from tuneforge.train.distributed import World
from tuneforge.train.optim import ParameterGroupsHook

__all__ = ["LoopContext", "LoopResult", "LoopState", "TrainingInterrupted"]


@dataclass
class LoopContext:
    """What the loop talks to besides model, method and data.

    Attributes:
        on_eval: runs after each validation and each checkpoint (e.g. re-plot the loss curve).
        checkpoints: where and when to checkpoint (None: never).
        resume: a checkpoint folder to continue from.
        reporters: objects with `log(record)` (TensorBoard, W&B, MLflow).
        parameter_groups: the adapter's own optimizer groups (e.g. LoRA+), if it has them.
        regularizer: model → a penalty added to every optimizer step's loss (e.g. EWC), logged as `penalty`.
        replay: samples of general data; `settings.replay_share` of every step's rows come from them.
        world: the processes of a data-parallel run this one is part of (see tuneforge.train.distributed); only
            its main process should be given `on_eval`, `reporters` and a MetricsLog that writes.
    """

    on_eval: Callable[[], None] | None = None
    checkpoints: CheckpointStore | None = None
    resume: Path | None = None
    reporters: list[Any] = field(default_factory=list)
    parameter_groups: ParameterGroupsHook | None = None
    regularizer: Callable[[Any], torch.Tensor] | None = None
    replay: list[RenderedSample] = field(default_factory=list)
    world: World = field(default_factory=World)


@dataclass
class LoopResult:
    steps: int
    epochs: float
    final_loss: float  # of the returned weights: the best step's when early stopping restored them
    final_val_loss: float | None
    tokens_per_s: float
    seconds: float
    best_step: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    restored_best: bool = False
    resumed_from: int | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (`signal_name`) during training: the run stopped after `step`, saved to `checkpoint`
    (None when there was nothing to save)."""

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str = "SIGINT") -> None:
        super().__init__(f"interrupted by {signal_name} after step {step}")
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name


@dataclass
class LoopState:
    """The loop's counters; a checkpoint stores them so that a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    index: int = 0  # optimizer steps already taken in `epoch`
    seen_tokens: int = 0
    train_seconds: float = 0.0
    best_step: int | None = None
    best_val_loss: float | None = None
    evals_since_best: int = 0
    last_loss: float = float("nan")
    last_val_loss: float | None = None
