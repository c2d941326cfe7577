"""The optimisation loop: micro-batches, exact token-normalised gradient accumulation, schedule, validation.

A micro-batch holds `batch_size` rows; the order of the rows is reshuffled every epoch. Without packing a row is
one sample and a micro-batch is one padded forward pass. With packing a row is a pack: samples grouped once by
best fit into at most `cutoff_len` tokens, laid out end to end with position_ids restarting per sample, and every
pack is a forward pass of its own: no padding, memory bounded by one pack, logits only at supervised positions.
Each optimizer step still divides by the supervised tokens of all its forward passes, so the update is exact.
Validation runs every `eval_steps`, at each epoch end and at the last step; with `early_stopping_patience` the
run stops after that many evaluations without a lower validation loss and ends with the best weights.
Checkpoints (see tuneforge.train.checkpoint) hold everything a resumed run needs to continue exactly: weights,
optimizer, scheduler, RNG states, the data position and the metrics so far. The first Ctrl-C or SIGTERM finishes
the current step, saves a checkpoint and raises TrainingInterrupted.

Data-parallel (`LoopContext.world` of several processes, see tuneforge.train.distributed): a step's rows are laid
out as for one process with `batch_size` × processes rows per micro-batch, and each process trains on its slice of
every micro-batch; the result is that single-process run's. Every process keeps the same counters and takes the
same decisions (evaluation, early stopping, stop requests); only the main one writes checkpoints and metrics. A
sharded run (FSDP, see tuneforge.train.sharding) gathers the weights and optimizer state whole for a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.render import RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods.base import Objective
from tuneforge.progress import progress_bar
from tuneforge.train.batches import (
    collate_rows,
    plan_steps,
    replay_step_groups,
    step_groups,
    to_device,
    token_total,
    training_rows,
)
from tuneforge.train.callbacks import MetricsLog, check_finite
from tuneforge.train.checkpoint import (
    capture_rng,
    load_trainable,
    load_training_state,
    read_trainer_state,
    restore_rng,
    trainable_state,
)
from tuneforge.train.loop_state import LoopContext, LoopResult, LoopState, TrainingInterrupted
from tuneforge.train.optim import build_optimizer, build_scheduler, parameter_groups, warmup_steps
from tuneforge.train.precision import model_device, nondeterminism_error
from tuneforge.train.settings import LoopSettings
from tuneforge.train.sharding import full_optimizer_state, full_trainable_state, load_full_optimizer_state
from tuneforge.train.step import evaluate, optimizer_step, prepare_model, stop_requests

__all__ = ["LoopContext", "LoopResult", "TrainingInterrupted", "train_loop"]


class _Trainer:
    """One training run over prepared samples; `run()` trains the model in place."""

    def __init__(
        self,
        model: Any,
        objective: Objective,
        data: tuple[list[RenderedSample], list[RenderedSample]],
        settings: LoopSettings,
        log: MetricsLog,
        context: LoopContext,
    ) -> None:
        self.model, self.objective, self.settings, self.log, self.context = model, objective, settings, log, context
        self.world = context.world
        # the rows of every step, laid out as one process would with all the processes' micro-batches in one
        self.plan = replace(settings, batch_size=settings.batch_size * self.world.size)
        self.train, self.val = data
        if settings.early_stopping_patience and not self.val:
            raise UserError(
                "train.early_stopping_patience needs validation data: set data.val_size > 0 or give data.eval"
            )
        self.rows = training_rows(self.train, settings)
        self.samples = self.train + context.replay  # row indices point into this list; replay rows come last
        self.replay_rows = [[len(self.train) + i for i in row] for row in training_rows(context.replay, settings)]
        if settings.replay_share and (not self.replay_rows or self.plan.batch_size * settings.grad_accum < 2):
            raise UserError(
                "train.replay needs replay data and at least 2 rows per step (train.batch_size × train.grad_accum)"
            )
        self.per_epoch, self.total = plan_steps(len(self.rows), self.plan)
        self.eval_every = settings.eval_steps or max(1, self.total // 5)
        self.amp = prepare_model(model, settings)
        self.device = model_device(model)
        self.world.broadcast_parameters(p for p in model.parameters() if p.requires_grad)
        groups = parameter_groups(
            model, settings.learning_rate, settings.weight_decay, settings.layer_lr_decay, context.parameter_groups
        )
        self.optimizer = build_optimizer(settings.optimizer, groups, settings.learning_rate)
        warmup = warmup_steps(self.total, settings.warmup_ratio, settings.warmup_steps)
        self.scheduler = build_scheduler(self.optimizer, settings.scheduler, warmup, self.total)
        self.state = LoopState()
        self.saved_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.resumed_from: int | None = None

    # ------------------------------------------------------------------------------------------------ state

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at `path`: weights, optimizer, scheduler, scaler, RNG, counters, metrics."""
        saved = read_trainer_state(path)
        load_trainable(self.model, path)
        tensors = load_training_state(path)
        try:
            if self.world.sharded:
                load_full_optimizer_state(self.model, self.optimizer, tensors["optimizer"])
            else:
                self.optimizer.load_state_dict(tensors["optimizer"])
        except (ValueError, KeyError) as err:
            raise UserError(
                f"cannot restore the optimizer state of {path} ({err}); the trainable parameters or their groups "
                "changed (adapter, train.weight_decay, train.layer_lr_decay): start afresh"
            ) from None
        self.scheduler.load_state_dict(tensors["scheduler"])
        if self.amp.scaler is not None and tensors.get("scaler"):
            self.amp.scaler.load_state_dict(tensors["scaler"])
        ranks = tensors.get("rng_ranks") or []
        restore_rng(ranks[self.world.rank] if self.world.rank < len(ranks) else tensors["rng"])
        known = set(LoopState.__dataclass_fields__)
        self.state = LoopState(**{k: v for k, v in saved["loop"].items() if k in known})
        self.log.replace(saved["metrics"])
        self.objective.models.state.update(saved.get("method_state", {}))
        self.saved_step = self.resumed_from = self.state.step
        if self.context.checkpoints is not None and self.world.is_main:
            self.context.checkpoints.discard_after(self.state.step)

    def _save(self) -> Path | None:
        """Checkpoint the state after the current step (once per step)."""
        store = self.context.checkpoints
        if store is None or self.state.step == 0 or self.saved_step == self.state.step:
            return store.path(self.state.step) if store is not None and self.state.step else None
        rng = self.world.gather(capture_rng())  # every process draws from its own generators
        sharded = self.world.sharded  # then every process takes part in gathering the weights and optimizer
        weights = full_trainable_state(self.model, self.world) if sharded else None
        optimizer = full_optimizer_state(self.model, self.optimizer) if sharded else None
        if not self.world.is_main:
            self.saved_step = self.state.step
            return store.path(self.state.step)
        tensors = {
            "optimizer": optimizer if sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
            "rng": rng[0],
            **({"rng_ranks": rng} if self.world.parallel else {}),
        }
        info = {
            "version": 1,  # of this layout of the loop's state
            "step": self.state.step,
            "data": {"epoch": self.state.epoch, "index": self.state.index, "shuffle_seed": self.settings.seed},
            "loop": asdict(self.state),
            "metrics": self.log.records,
            "method_state": dict(self.objective.models.state),
        }
        path = store.save(self.state.step, self.model, tensors, info, self.state.best_step, weights)
        self.saved_step = self.state.step
        if self.context.on_eval is not None:
            self.context.on_eval()
        return path

    # ------------------------------------------------------------------------------------------------ steps

    def _train_step(self, group: list[list[list[int]]]) -> dict[str, Any]:
        """One optimizer step over `group`; returns its metrics record."""
        started = time.perf_counter()
        parts = [self.world.part(micro, self.settings.batch_size) for micro in group]  # this process's rows
        batches = [
            to_device(batch, self.device)
            for micro in parts
            if micro
            for batch in collate_rows(self.objective, self.samples, micro, self.settings)
        ]
        filler = self._fillers(group, len(batches))
        step = self.state.step + 1
        result = optimizer_step(
            self.model,
            self.objective,
            batches,
            self.settings,
            step,
            self.amp,
            self.optimizer,
            self.context.regularizer,
            self.world,
            filler,
        )
        loss, norm = result.loss, result.grad_norm
        lr = self.scheduler.get_last_lr()[0]
        self.amp.step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        s = self.state
        s.train_seconds += time.perf_counter() - started
        s.seen_tokens += token_total(self.samples, group)
        s.step, s.last_loss = step, loss
        return {
            "step": step,
            "epoch": round(step / self.per_epoch, 3),
            "loss": loss,
            "lr": lr,
            "grad_norm": norm if math.isfinite(norm) else None,
            "tokens_per_s": s.seen_tokens / max(s.train_seconds, 1e-9),
            **result.metrics,
        }

    def _fillers(self, group: list[list[list[int]]], forwards: int) -> list[Any]:
        """A sharded run's filler batches for this process (see `optimizer_step`): copies of the step's first row."""
        count = self.world.fillers(forwards)
        if not count:
            return []
        first = collate_rows(self.objective, self.samples, group[0][:1], self.settings)[0]
        return [to_device(first, self.device)] * count

    def _evaluate(self, record: dict[str, Any]) -> bool:
        """Validation loss (and the method's metrics) into `record`; True when it is the best so far.

        Updates the early-stopping counters.
        """
        s = self.state
        evaluation = evaluate(self.model, self.objective, self.val, self.settings, self.amp.precision, self.world)
        val_loss = s.last_val_loss = evaluation.loss if evaluation is not None else None
        record["val_loss"] = val_loss
        if evaluation is None:
            return False
        record.update({f"val_{name}": value for name, value in evaluation.metrics.items()})
        record.update({f"val_loss/{task}": value for task, value in evaluation.per_task.items()})
        check_finite(evaluation.loss, "validation loss", s.step)
        if s.best_val_loss is None or val_loss < s.best_val_loss:
            s.best_step, s.best_val_loss, s.evals_since_best = s.step, val_loss, 0
            return True
        s.evals_since_best += 1
        return False

    def _due_for_eval(self, step: int) -> bool:
        return step % self.eval_every == 0 or step % self.per_epoch == 0 or step == self.total

    def _patience_spent(self) -> bool:
        patience = self.settings.early_stopping_patience
        return bool(patience) and self.state.evals_since_best >= patience

    def _after_step(self, record: dict[str, Any]) -> bool:
        """Evaluate, log, checkpoint; True when early stopping ends the run."""
        step = record["step"]
        evaluated = improved = False
        if self._due_for_eval(step):
            improved = self._evaluate(record)
            evaluated = True
        if step % self.settings.logging_steps == 0 or evaluated:
            self.log.write(**record)
            for reporter in self.context.reporters:
                reporter.log(record)
        if evaluated and self.context.on_eval is not None:
            self.context.on_eval()
        if improved and self.settings.early_stopping_patience and step < self.total:
            self._keep_best()  # at the last step the current weights are the best ones anyway
        store = self.context.checkpoints
        if store is not None and step < self.total and store.due(step, evaluated):
            self._save()
        return self._patience_spent()

    def _keep_best(self) -> None:
        """Make sure the best weights can be restored: a checkpoint when there is a store, else a copy in memory."""
        if self.context.checkpoints is not None:
            self._save()
        else:
            self.best_weights = trainable_state(self.model)

    def _restore_best(self) -> bool:
        """Put the best validation weights back (early stopping); True when they differ from the current ones."""
        s = self.state
        if not self.settings.early_stopping_patience or s.best_step is None or s.best_step == s.step:
            return False
        store = self.context.checkpoints
        path = store.path(s.best_step) if store is not None else None
        if path is not None:
            load_trainable(self.model, path)
            return True
        if self.best_weights is None:
            return False
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in self.best_weights.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        return True

    # ------------------------------------------------------------------------------------------------ run

    def _stop_agreed(self, requested: bool) -> bool:
        """Whether to stop now: a stop request on any process stops them all after the same step."""
        return self.world.any(requested) if self.world.parallel else requested

    def _loss_at(self, step: int | None) -> float:
        """The logged training loss of `step` (the last loss when it was not logged)."""
        logged = [r["loss"] for r in self.log.records if r.get("step") == step]
        return logged[-1] if logged else self.state.last_loss

    def _info(self, record: dict[str, Any]) -> str:
        val = self.state.last_val_loss
        text = f"loss {record['loss']:.3f}" + (f" val {val:.3f}" if val is not None else "")
        return f"{text} lr {record['lr']:.1e} {record['tokens_per_s']:.0f} tok/s"

    def run(self) -> LoopResult:
        """Train from the current state to the last step, early stopping or Ctrl-C."""
        self.model.train()
        s = self.state
        if self.settings.replay_share:
            groups = replay_step_groups(self.rows, self.replay_rows, self.plan, s.epoch, s.index)
        else:
            groups = step_groups(self.rows, self.plan, s.epoch, s.index)
        stopped_early = False
        with stop_requests() as stop_requested, progress_bar("training", self.total, completed=s.step) as advance:
            while s.step < self.total:
                epoch, index, group = next(groups)
                record = self._train_step(group)
                s.epoch, s.index = (epoch + 1, 0) if index + 1 == self.per_epoch else (epoch, index + 1)
                stopped_early = self._after_step(record)
                advance(1, info=self._info(record))
                if stopped_early:
                    break
                if self._stop_agreed(stop_requested()) and s.step < self.total:
                    raise TrainingInterrupted(s.step, self._save(), stop_requested.signal_name)
        restored = self._restore_best()
        final = (self._loss_at(s.best_step), s.best_val_loss) if restored else (s.last_loss, s.last_val_loss)
        return LoopResult(
            s.step,
            s.step / self.per_epoch,
            *final,
            s.seen_tokens / max(s.train_seconds, 1e-9),
            s.train_seconds,
            best_step=s.best_step,
            best_val_loss=s.best_val_loss,
            stopped_early=stopped_early,
            restored_best=restored,
            resumed_from=self.resumed_from,
        )


def train_loop(
    model: Any,
    objective: Objective,
    train: list[RenderedSample],
    val: list[RenderedSample],
    settings: LoopSettings,
    log: MetricsLog,
    context: LoopContext | None = None,
) -> LoopResult:
    """Train `model` in place; metrics go to `log`; `context` adds checkpoints, resume, reporters, adapter groups."""
    trainer = _Trainer(model, objective, (train, val), settings, log, context or LoopContext())
    if context is not None and context.resume is not None:
        trainer.resume(context.resume)
    try:
        return trainer.run()
    except RuntimeError as err:
        explained = nondeterminism_error(err)  # train.deterministic met an operation without such a kernel
        if explained is None:
            raise
        raise explained from err
