"""The one place token losses are computed, so every method normalises the same way."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.config.schema import RunConfig
from tuneforge.data.packing import collate_packed, collate_padded
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.data.soft_targets import SOFT_KEYS, distribution_loss
from tuneforge.models.adapters import ADAPTERS, adapter_disabled, prepended_tokens

__all__ = [
    "causal_lm_loss_sum",
    "collate_sequences",
    "frozen_reference",
    "reference_log_probs",
    "sequence_count",
    "sequence_log_probs",
    "supervised_logits",
    "supervised_token_count",
]


def supervised_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Number of positions whose target is supervised."""
    return int((batch["targets"] != IGNORE_INDEX).sum())


def causal_lm_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed (not averaged) cross-entropy over supervised positions.

    Callers divide by the supervised-token count of the whole optimizer step, which makes gradient
    accumulation exact: k micro-batches give the same update as one batch holding all their tokens.
    For a packed batch (one row), logits are computed only at supervised positions (`logits_to_keep`).
    The logits of virtual tokens a prompt-learning model puts in front (`prepended_tokens`) are skipped, so that
    logits and targets line up. Positions a batch gives a base distribution for (`data.soft_targets`) are scored
    against that distribution instead of their token.
    """
    targets = batch["targets"]
    keep = targets != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k != "targets" and k not in SOFT_KEYS}
    virtual = prepended_tokens(model)
    if targets.shape[0] == 1 and "attention_mask" not in batch:
        positions = keep[0].nonzero().squeeze(-1)
        logits = model(**inputs, use_cache=False, logits_to_keep=positions + virtual).logits[0]
        return _loss_sum(logits, targets[0, positions], batch)
    logits = model(**inputs, use_cache=False).logits
    logits = logits[:, logits.shape[1] - targets.shape[1] :]  # virtual tokens in front (none with adapter disabled)
    # index tensors from the targets, not a boolean mask: the estimate traces this on the meta device, where the
    # size of a masked selection cannot be known
    rows, columns = keep.nonzero(as_tuple=True)
    return _loss_sum(logits[rows, columns], targets[rows, columns], batch)


def _loss_sum(logits: torch.Tensor, targets: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy of supervised-position `logits` against their `targets`, or against the base
    distribution at the positions `batch["soft_positions"]` names."""
    if "soft_positions" not in batch:
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    soft = batch["soft_positions"]
    replaced = distribution_loss(logits[soft], batch["soft_ids"], batch["soft_log_probs"])
    return losses.index_copy(0, soft, replaced).sum()


def collate_sequences(samples: list[RenderedSample], packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    """Several sequences in one forward pass, each kept apart for per-sequence sums (see `sequence_log_probs`).

    Packed: one row, position_ids restarting per sequence, and `sequence_ids` (the sequence of each position).
    Padded: one row per sequence (the row index is the sequence).
    """
    if not packing:
        return collate_padded(samples, pad_id)
    batch = collate_packed(samples)
    batch["sequence_ids"] = torch.tensor([[i for i, s in enumerate(samples) for _ in s.input_ids]])
    return batch


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("targets", "sequence_ids")}


def supervised_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, targets, sequence index) at every supervised position of a batch from `collate_sequences`.

    Logits are computed only at those positions for a packed row (`logits_to_keep`), in float32.
    """
    targets = batch["targets"]
    keep = targets != IGNORE_INDEX
    virtual = prepended_tokens(model)
    if targets.shape[0] == 1 and "attention_mask" not in batch:
        positions = keep[0].nonzero().squeeze(-1)
        out = model(**_model_inputs(batch), use_cache=False, logits_to_keep=positions + virtual)
        sequences = batch["sequence_ids"][0, positions] if "sequence_ids" in batch else torch.zeros_like(positions)
        return out.logits[0].float(), targets[0, positions], sequences
    logits = model(**_model_inputs(batch), use_cache=False).logits
    logits = logits[:, logits.shape[1] - targets.shape[1] :]  # virtual tokens in front (none with adapter disabled)
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
    return logits[keep].float(), targets[keep], rows[keep]


def sequence_log_probs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each sequence's supervised tokens, their token counts), one entry per sequence."""
    logits, targets, sequences = supervised_logits(model, batch)
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    count = sequence_count(batch)
    sums = torch.zeros(count, dtype=token_logps.dtype, device=token_logps.device).index_add(0, sequences, token_logps)
    tokens = torch.zeros(count, dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, sequences, torch.ones_like(token_logps)
    )
    return sums, tokens


def sequence_count(batch: dict[str, torch.Tensor]) -> int:
    """How many sequences a batch from `collate_sequences` holds."""
    if "sequence_ids" in batch:
        return int(batch["sequence_ids"].max()) + 1 if batch["sequence_ids"].numel() else 0
    return int(batch["targets"].shape[0])


def frozen_reference(config: RunConfig, needed: bool = True) -> dict[str, str | None]:
    """`Method.needs` for methods that compare with the reference: a frozen copy of the base (source None) when
    `needed` and the adapter cannot simply be switched off to give the base model's outputs, else nothing."""
    return {"reference": None} if needed and not ADAPTERS.get(config.adapter.name).can_disable else {}


def reference_log_probs(model: Any, reference: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence log-probabilities under the frozen reference: `reference` if given, else `model` with its
    adapter disabled (the base weights, no second copy in memory)."""
    with torch.no_grad():
        if reference is not None:
            return sequence_log_probs(reference, batch)[0]
        with adapter_disabled(model):
            return sequence_log_probs(model, batch)[0]
