"""KTO (Ethayarajh et al. 2024): learn from answers labelled desirable or undesirable, no pairs needed.

`method: {name: kto, beta, desirable_weight, undesirable_weight}`. Each sample's reward is β·log π/π_ref of its
answer; the reference point z is the batch's KL estimate: the policy/reference log-ratio of mismatched
prompt-answer pairs (each prompt with the next sample's answer), as in the paper and TRL, clamped at 0 and not
differentiated. With several samples per micro-batch the estimate is meaningful (train.batch_size ≥ 2); with one
it is 0. The reference is the model with its peft adapter disabled, or a frozen copy for full fine-tuning.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from tuneforge.config.schema import MethodParams
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.loss import collate_sequences, frozen_reference, reference_log_probs, sequence_log_probs
from tuneforge.methods.preference import kto_losses

__all__ = ["KtoParams", "collate_kto", "kto_loss", "mismatched"]


class KtoParams(MethodParams):
    """`method:` keys of kto."""

    name: Literal["kto"] = Field("kto", description="Training method.")
    beta: float = Field(0.1, gt=0, description="Inverse temperature β of the reward.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight λ_D of desirable answers.")
    undesirable_weight: float = Field(
        1.0, gt=0, description="Loss weight λ_U of undesirable answers (balance them when one kind is rarer)."
    )


def _answer_start(sample: RenderedSample) -> int:
    """Index of the first supervised token: what comes before it is the prompt."""
    return next((i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX), len(sample.labels))


def mismatched(prompt_of: RenderedSample, answer_of: RenderedSample) -> RenderedSample:
    """The prompt of one sample followed by the answer of another (for the KL estimate)."""
    cut_prompt, cut_answer = _answer_start(prompt_of), _answer_start(answer_of)
    prompt = prompt_of.input_ids[:cut_prompt]
    return RenderedSample(
        prompt + answer_of.input_ids[cut_answer:],
        [IGNORE_INDEX] * len(prompt) + answer_of.labels[cut_answer:],
        kind="kto",
    )


def collate_kto(samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
    """The samples, then (with two or more) each prompt with the next sample's answer; `desirable` labels."""
    sequences = list(samples)
    if len(samples) > 1:
        sequences += [mismatched(s, samples[(i + 1) % len(samples)]) for i, s in enumerate(samples)]
    batch = collate_sequences(sequences, packing, pad_id)
    batch["desirable"] = torch.tensor([bool(s.label) for s in samples])
    return batch


def count_samples(batch: Batch) -> int:
    """The normaliser: labelled samples in the batch."""
    return int(batch["desirable"].shape[0])


def kto_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Summed KTO losses; metrics: mean reward of desirable and of undesirable answers, the KL estimate."""
    assert isinstance(params, KtoParams)
    desirable = batch["desirable"]
    inputs = {k: v for k, v in batch.items() if k != "desirable"}
    n = int(desirable.shape[0])
    logps = sequence_log_probs(model, inputs)[0]
    ref = reference_log_probs(model, models.reference, inputs)
    if logps.shape[0] > n:
        kl = (logps[n:] - ref[n:]).mean().detach().clamp(min=0)
    else:
        kl = torch.zeros((), device=logps.device)
    values, rewards = kto_losses(
        logps[:n], ref[:n], desirable, kl, params.beta, params.desirable_weight, params.undesirable_weight
    )
    metrics = {
        "reward_desirable": (float(rewards[desirable].sum()), float(desirable.sum())),
        "reward_undesirable": (float(rewards[~desirable].sum()), float((~desirable).sum())),
        "kl": float(kl) * n,
    }
    return LossSums(values.sum(), metrics)


register_method(
    "kto",
    Method(
        params=KtoParams,
        data_kinds=frozenset({"kto"}),
        collate=collate_kto,
        loss=kto_loss,
        count=count_samples,
        metrics=("reward_desirable", "reward_undesirable", "kl"),
        needs=frozen_reference,
    ),
)
