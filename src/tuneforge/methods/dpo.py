"""Direct preference optimisation and its family on chosen/rejected pairs: DPO, IPO, hinge, ORPO and SimPO.

`method: {name: dpo, loss: sigmoid | ipo | hinge | orpo | simpo, beta, label_smoothing, gamma, sft_weight}`.
DPO, IPO and hinge compare the policy with a frozen reference, the model as it was before training: with a peft
adapter (LoRA, QLoRA, IA3, prompt learning) the reference log-probabilities come from the same weights with the
adapter disabled; with full or freeze fine-tuning a frozen copy of the base model is kept. ORPO and SimPO need no
reference. The chosen and rejected answers of each pair go through one forward pass (packed into one row when
the adapter allows it). Per step it reports the rewards of the chosen and rejected answers, their margin and the
share of pairs whose chosen reward is higher (accuracy).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from tuneforge.config.schema import MethodParams, RunConfig
from tuneforge.data.render import RenderedSample
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.loss import (
    collate_sequences,
    frozen_reference,
    reference_log_probs,
    sequence_count,
    sequence_log_probs,
)
from tuneforge.methods.preference import REFERENCE_FREE, pair_losses
from tuneforge.progress import progress_bar

__all__ = ["DpoParams", "collate_pairs", "dpo_loss", "precompute_reference"]


class DpoParams(MethodParams):
    """`method:` keys of dpo."""

    name: Literal["dpo"] = Field("dpo", description="Training method.")
    loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = Field(
        "sigmoid",
        description="sigmoid = DPO; ipo; hinge; orpo (reference-free, odds ratio + SFT on the chosen answer); "
        "simpo (reference-free, length-normalised, target margin gamma).",
    )
    beta: float = Field(
        0.1, gt=0, description="Inverse temperature β (ORPO: the weight λ of the odds-ratio term; SimPO: try 2)."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Share of pairs assumed mislabelled (conservative DPO / SimPO)."
    )
    gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin γ.")
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of an extra SFT (mean NLL) term on the chosen answers (ORPO has it built in)."
    )
    precompute_reference: bool = Field(
        False,
        description="Score every pair under the reference once before training and keep the numbers: no frozen "
        "copy in memory and no reference pass per step (worth it for full fine-tuning).",
    )


def collate_pairs(samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
    """Each pair's chosen and rejected answers, in that order, as separate sequences of one forward pass."""
    sequences = []
    for sample in samples:
        assert sample.rejected is not None, "a preference sample holds its rejected answer"
        sequences += [sample, sample.rejected]
    batch = collate_sequences(sequences, packing, pad_id)
    if all(s.reference_logp is not None for s in sequences):
        batch["reference_logps"] = torch.tensor([s.reference_logp for s in sequences], dtype=torch.float32)
    return batch


@torch.no_grad()
def precompute_reference(samples: list[RenderedSample], model: Any, params: MethodParams) -> None:
    """Store on each pair the reference log-probabilities of its answers (the base model, before training)."""
    assert isinstance(params, DpoParams)
    if not params.precompute_reference or params.loss in REFERENCE_FREE:
        return
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with progress_bar("reference log-probabilities (once)", total=len(samples)) as advance:
        for start in range(0, len(samples), 8):
            chunk = samples[start : start + 8]
            batch = {k: v.to(device) for k, v in collate_pairs(chunk, True, 0).items()}
            logps = sequence_log_probs(model, batch)[0].tolist()
            for index, sample in enumerate(chunk):
                sample.reference_logp = logps[2 * index]
                sample.rejected.reference_logp = logps[2 * index + 1]  # type: ignore[union-attr]
            advance(len(chunk))
    model.train(was_training)


def count_pairs(batch: Batch) -> int:
    """The normaliser: pairs in the batch."""
    return sequence_count(batch) // 2


def dpo_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Summed pair losses; metrics: chosen/rejected rewards, margin and accuracy per pair."""
    assert isinstance(params, DpoParams)
    given = batch.get("reference_logps")
    batch = {k: v for k, v in batch.items() if k != "reference_logps"}
    logps, tokens = sequence_log_probs(model, batch)
    chosen, rejected = (logps[0::2], tokens[0::2]), (logps[1::2], tokens[1::2])
    reference = None
    if params.loss not in REFERENCE_FREE:
        ref = given.to(logps) if given is not None else reference_log_probs(model, models.reference, batch)
        reference = (ref[0::2], ref[1::2])
    values, chosen_rewards, rejected_rewards = pair_losses(
        params.loss, chosen, rejected, reference, params.beta, params.label_smoothing, params.gamma
    )
    if params.sft_weight:
        values = values - params.sft_weight * chosen[0] / chosen[1].clamp(min=1)
    margins = chosen_rewards - rejected_rewards
    metrics = {
        "reward_chosen": float(chosen_rewards.sum()),
        "reward_rejected": float(rejected_rewards.sum()),
        "margin": float(margins.sum()),
        "accuracy": float((margins > 0).float().sum()),
    }
    return LossSums(values.sum(), metrics)


def _needs(config: RunConfig) -> dict[str, str | None]:
    """A frozen copy of the base as reference, unless the loss needs none or the adapter can be disabled."""
    params = config.method
    assert isinstance(params, DpoParams)
    return frozen_reference(config, params.loss not in REFERENCE_FREE and not params.precompute_reference)


register_method(
    "dpo",
    Method(
        params=DpoParams,
        data_kinds=frozenset({"preference"}),
        collate=collate_pairs,
        loss=dpo_loss,
        count=count_pairs,
        metrics=("reward_chosen", "reward_rejected", "margin", "accuracy"),
        needs=_needs,
        prepare_data=precompute_reference,
    ),
)
