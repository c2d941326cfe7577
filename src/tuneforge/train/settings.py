"""The config turned into the flat, typed settings the training loop runs on (once, at the edge), and the
guard on what a resumed run must share with the run that wrote its checkpoint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig, TrainSection
from tuneforge.errors import UserError

__all__ = ["LOOP_TRAIN_KEYS", "SCHEDULE_KEYS", "LoopSettings", "check_compatible", "resume_guard", "run_fingerprints"]


@dataclass(frozen=True)
class LoopSettings:
    """Everything the loop needs, as plain values.

    Fields named like a `train:` key take that key's value (see `from_config`); their meaning is documented on
    the schema. `packing` says whether rows are best-fit packs of samples, `cutoff_len` is a pack's capacity in
    tokens and `pad_id` pads unpacked batches. `replay_share` is the share of every step's rows that come from
    the replay data (train.replay).
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
    optimizer: str = "adamw"
    warmup_steps: int | None = None
    layer_lr_decay: float = 1.0
    dtype: str = "auto"
    gradient_checkpointing: str | bool = False
    early_stopping_patience: int | None = None
    replay_share: float = 0.0

    @classmethod
    def from_config(cls, config: RunConfig, packing: bool, pad_id: int) -> LoopSettings:
        """The loop's settings for `config`: its `train:` keys, the data's cutoff, packing and the pad id."""
        train = {key: getattr(config.train, key) for key in LOOP_TRAIN_KEYS}
        share = config.train.replay.share if config.train.replay is not None else 0.0
        return cls(**train, packing=packing, pad_id=pad_id, cutoff_len=config.data.cutoff_len, replay_share=share)


# The `train:` keys the loop reads; every other train key is used before the loop starts (see train/run.py).
LOOP_TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(LoopSettings) if f.name in TrainSection.model_fields)


# The keys that shape the learning-rate schedule: a resumed run that changed one would follow another schedule.
SCHEDULE_KEYS = ("train.max_steps", "train.epochs", "train.scheduler", "train.warmup_ratio", "train.warmup_steps")


def resume_guard(config: RunConfig) -> dict[str, Any]:
    """The config values a resumed run must share with the run that wrote its checkpoint, by dotted key.

    A change without effect is no reason to refuse: train.warmup_ratio counts only without train.warmup_steps,
    and the run's length (train.max_steps, or train.epochs without it) only when the schedule depends on it
    (cosine or linear decay, or warm-up as a share of the run); a constant rate may be extended.
    """
    t = config.train
    guarded = {
        "model.name_or_path": config.model.name_or_path,
        "method": config.method.model_dump(mode="json"),
        "adapter": config.adapter.model_dump(mode="json"),
        "data.packing": config.data.packing,
        "train.batch_size": t.batch_size,
        "train.grad_accum": t.grad_accum,
        "train.seed": t.seed,
        "train.optimizer": t.optimizer,
        "train.learning_rate": t.learning_rate,
        "train.weight_decay": t.weight_decay,
        "train.layer_lr_decay": t.layer_lr_decay,
        "train.ewc": t.ewc.model_dump(mode="json") if t.ewc is not None else None,
        "train.replay": t.replay.model_dump(mode="json") if t.replay is not None else None,
        "train.scheduler": t.scheduler,
        "train.warmup_steps": t.warmup_steps,
    }
    if t.warmup_steps is None:
        guarded["train.warmup_ratio"] = t.warmup_ratio
    if t.scheduler != "constant" or (t.warmup_steps is None and t.warmup_ratio > 0):
        guarded["train.max_steps"] = t.max_steps
        if t.max_steps <= 0:
            guarded["train.epochs"] = t.epochs
    return guarded


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _samples_digest(samples: list[Any]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps([sample.input_ids, sample.labels]).encode())
    return digest.hexdigest()[:16]


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def run_fingerprints(guarded: dict[str, Any], train: list[Any], val: list[Any]) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint: plain values as they are (so that a
    refusal can say old → new), sections and the prepared data as short hashes.

    `guarded` maps dotted config keys to their values (see `resume_guard`).
    """
    fingerprints = {key: value if _is_plain(value) else _digest(value) for key, value in guarded.items()}
    fingerprints["data"] = f"{_samples_digest(train)}:{_samples_digest(val)}"
    return fingerprints


def check_compatible(
    saved: dict[str, Any], current: dict[str, Any], source: Path, force: bool, hashed: bool = False
) -> list[str]:
    """The keys whose values differ from the checkpoint's; an error naming them (old → new) unless `force`.

    `hashed`: the checkpoint predates plain values and stored every value as a hash.
    """
    changed = [
        key
        for key, value in current.items()
        if key in saved and saved[key] != value and not (hashed and saved[key] == _digest(value))
    ]
    if not changed or force:
        return changed
    shown = {key for key in changed if not hashed and _is_plain(saved[key]) and _is_plain(current[key])}
    shown -= {"data", "method", "adapter"}
    what = ", ".join(
        "data (the prepared samples differ)"
        if key == "data"
        else f"{key} ({json.dumps(saved[key])} → {json.dumps(current[key])})"
        if key in shown
        else key
        for key in changed
    )
    old = " ".join(f"{key}={json.dumps(saved[key])}" for key in changed if key in shown)
    schedule = [key for key in changed if key in SCHEDULE_KEYS]
    why = (
        f"the rest of the run would follow another learning-rate schedule than its first part ({', '.join(schedule)})"
        if schedule
        else "the result would mix two different runs"
    )
    raise UserError(
        f"cannot resume from {source}: {what} changed since it was written, so {why}. Put the old value back"
        f"{f' ({old})' if old else ''}, pass --force to resume anyway, or start afresh with output.overwrite=true"
    )
