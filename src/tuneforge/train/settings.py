"""The config turned into the flat, typed settings the training loop runs on (once, at the edge)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tuneforge.config.schema import RunConfig, TrainSection

__all__ = ["LOOP_TRAIN_KEYS", "LoopSettings", "resume_guard"]


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


def resume_guard(config: RunConfig) -> dict[str, Any]:
    """The config values a resumed run must share with the run that wrote its checkpoint, by dotted key."""
    t = config.train
    return {
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
    }
