"""GRPO, group relative policy optimisation (Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical
Reasoning in Open Language Models", arXiv:2402.03300): reinforcement learning from rule rewards, without a value
model.

`method: {name: grpo, num_generations, max_new_tokens, temperature, top_p, beta, epsilon, rewards}` on chat data:
each conversation's final assistant answer is its reference answer, everything before it the prompt. For every
prompt of a micro-batch the policy (the model being trained) samples G = `num_generations` answers; the rewards
of `method.rewards` score each answer against the reference (see tuneforge.methods.rewards: exact_answer, format,
length, or your own functions from `plugins`), and each answer's advantage is its score normalised within its
group: A = (r - mean) / (std + 1e-4), the sample standard deviation of the G scores. Answers better than their
siblings are made more likely, worse ones less likely. The loss per answer token t is the clipped objective of PPO
plus a KL penalty towards the frozen reference (the model before training):

    -min(ρ_t·A, clip(ρ_t, 1-ε, 1+ε)·A) + β·(exp(ref_t - logp_t) - (ref_t - logp_t) - 1)

with ρ_t = exp(logp_t - logp_t,old); the answers are sampled by the very weights being updated (one update per
batch of samples), so ρ_t = 1 in value and only its gradient counts. The KL term is the paper's unbiased,
always positive k3 estimator. Each answer's loss is the mean over its tokens, and a prompt's loss the mean over its
G answers. An answer that ends at its first stop token keeps that token as its last supervised token, so an empty
answer (a stop token first) still counts. Log-probabilities divide the logits by the sampling temperature.

The reference is the model with its peft adapter disabled, or a frozen copy for full or freeze fine-tuning (none
at all when beta is 0). Per step it reports the mean `reward`, the mean within-group standard deviation
`reward_std` (0 means no signal: every answer of a group scored the same), the per-token `kl` to the reference,
the mean answer length `answer_tokens`, and each reward's own mean `reward_<name>` (unweighted).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from tuneforge.config.schema import MethodParams, RunConfig
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, Metric, register_method
from tuneforge.methods.loss import frozen_reference
from tuneforge.methods.rewards import ExactAnswerReward, RewardSpec, resolve_rewards, reward_names, score_answer
from tuneforge.methods.rollout import (
    answer_batch,
    can_pack,
    reference_token_log_probs,
    sample_answers,
    token_log_probs,
    unpadded,
)

__all__ = [
    "GrpoParams",
    "answer_means",
    "collate_prompts",
    "count_prompts",
    "grpo_loss",
    "group_advantages",
    "split_final_answer",
    "token_objective",
]

STD_EPSILON = 1e-4


class GrpoParams(MethodParams):
    """`method:` keys of grpo."""

    name: Literal["grpo"] = Field("grpo", description="Training method.")
    num_generations: int = Field(
        4, ge=2, description="Answers G sampled per prompt; advantages compare them within their group."
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Length limit of each sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers (and of their scores).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set of this mass.")
    beta: float = Field(
        0.04, ge=0, description="Weight β of the KL penalty towards the reference model; 0 needs no reference."
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range ε of the probability ratio.")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [ExactAnswerReward()],
        min_length=1,
        description="Rewards scoring each answer, summed with their weights: {name: exact_answer}, "
        "{name: format, pattern, match: search|full}, {name: length, target, scale} (characters), or "
        "{function: 'module:callable'} from a module listed in plugins; each may set weight.",
    )


# ---------------------------------------------------------------------------------------------------- data


def split_final_answer(sample: RenderedSample) -> tuple[list[int], list[int]]:
    """(prompt ids, reference answer ids): the last run of supervised tokens is the final answer, everything
    before it the prompt."""
    supervised = [i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX]
    if not supervised:
        raise ValueError("a sample without supervised tokens has no answer")
    start = supervised[-1]
    while start > 0 and sample.labels[start - 1] != IGNORE_INDEX:
        start -= 1
    if start == 0:
        raise ValueError("every token of the sample is supervised: it has no prompt (data.train_on_prompt?)")
    return sample.input_ids[:start], sample.input_ids[start : supervised[-1] + 1]


def _padded(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        columns = slice(width - len(row), width) if left else slice(0, len(row))
        ids[index, columns] = torch.tensor(row, dtype=torch.long)
        mask[index, columns] = 1
    return ids, mask


def collate_prompts(samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
    """Left-padded prompts (for generation) and right-padded reference answers, each with its mask.

    `packing` does not apply: GRPO samples its answers and builds its own forward pass from them.
    """
    prompts, answers = zip(*(split_final_answer(sample) for sample in samples), strict=True)
    prompt_ids, prompt_mask = _padded(list(prompts), pad_id, left=True)
    answer_ids, answer_mask = _padded(list(answers), pad_id, left=False)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "answer_ids": answer_ids, "answer_mask": answer_mask}


def count_prompts(batch: Batch) -> int:
    """The normaliser: prompts in the batch (their loss is the mean over their G answers)."""
    return int(batch["prompt_ids"].shape[0])


# ---------------------------------------------------------------------------------------------------- objective


def group_advantages(rewards: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantage of each answer, standard deviation of each group): rewards of consecutive groups of `group`
    answers, normalised within their group by its mean and sample standard deviation (+1e-4)."""
    grouped = rewards.view(-1, group)
    std = grouped.std(dim=1)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)) / (std.unsqueeze(1) + STD_EPSILON)
    return advantages.flatten(), std


def token_objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    epsilon: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss of each token, its k3 KL estimate to the reference; zeros without one).

    loss = -min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) + β·KL with ρ = exp(logp - old_logp), KL = exp(ref - logp) - (ref -
    logp) - 1. `advantages` holds each token's answer advantage.
    """
    ratio = torch.exp(logps - old_logps)
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon)
    policy = -torch.min(ratio * advantages, clipped * advantages)
    if ref_logps is None:
        return policy, torch.zeros_like(policy)
    delta = ref_logps - logps
    kl = torch.exp(delta) - delta - 1
    return policy + beta * kl, kl


def answer_means(values: torch.Tensor, sequences: torch.Tensor, count: int) -> torch.Tensor:
    """The mean of `values` per answer (`sequences`: the answer index of each value)."""
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(0, sequences, values)
    tokens = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(
        0, sequences, torch.ones_like(values)
    )
    return sums / tokens.clamp(min=1)


# ---------------------------------------------------------------------------------------------------- loss


def _score(
    params: GrpoParams, texts: list[str], references: list[str], prompts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score of each answer, each reward's own value per answer [rewards, answers]); answer i answers prompt
    i // G."""
    group = params.num_generations
    scored = [
        score_answer(params.rewards, text, references[i // group], prompts[i // group]) for i, text in enumerate(texts)
    ]
    scores = torch.tensor([total for total, _ in scored], dtype=torch.float32)
    parts = torch.tensor([list(each) for _, each in scored], dtype=torch.float32).T
    return scores, parts


def _metrics(
    params: GrpoParams, scores: torch.Tensor, parts: torch.Tensor, stds: torch.Tensor, answers: list[list[int]]
) -> dict[str, Metric]:
    n = float(len(answers))
    metrics: dict[str, Metric] = {
        "reward": (float(scores.sum()), n),
        "reward_std": (float(stds.sum()), float(stds.numel())),
        "answer_tokens": (float(sum(len(a) for a in answers)), n),
    }
    for name, values in zip(reward_names(params.rewards), parts, strict=True):
        metrics[name] = (float(values.sum()), n)
    return metrics


def grpo_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Sample, score and normalise G answers per prompt; the summed per-prompt losses (means over G answers)."""
    assert isinstance(params, GrpoParams)
    tokenizer = models.tokenizer
    assert tokenizer is not None, "grpo decodes its sampled answers: MethodModels.tokenizer is required"
    group = params.num_generations
    prompts = unpadded(batch["prompt_ids"], batch["prompt_mask"])
    references = [
        tokenizer.decode(a, skip_special_tokens=True).strip()
        for a in unpadded(batch["answer_ids"], batch["answer_mask"])
    ]
    sampling = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
    answers = sample_answers(model, tokenizer, batch["prompt_ids"], batch["prompt_mask"], group, **sampling)
    texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
    prompt_texts = [tokenizer.decode(p, skip_special_tokens=False) for p in prompts]
    scores, parts = _score(params, texts, references, prompt_texts)
    advantages, stds = group_advantages(scores, group)

    device = batch["prompt_ids"].device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = answer_batch(prompts, answers, can_pack(model), pad, device)
    logps, sequences = token_log_probs(model, inputs, params.temperature)
    ref = reference_token_log_probs(model, models.reference, inputs, params.temperature) if params.beta else None
    token_losses, kl = token_objective(
        logps, logps.detach(), ref, advantages.to(device)[sequences], params.epsilon, params.beta
    )
    loss = answer_means(token_losses, sequences, len(answers)).sum() / group
    metrics = _metrics(params, scores, parts, stds, answers)
    if ref is not None:
        metrics["kl"] = (float(kl.detach().sum()), float(kl.numel()))
    return LossSums(loss, metrics)


# ---------------------------------------------------------------------------------------------------- config


def _check(config: RunConfig) -> None:
    """Refuse settings that leave no prompt to answer or that would stop on the validation loss; import the
    reward functions of `plugins`."""
    params = config.method
    assert isinstance(params, GrpoParams)
    if config.data.train_on_prompt:
        raise UserError(
            "data.train_on_prompt: grpo samples its own answers to each prompt and learns only from them; "
            "set data.train_on_prompt to false"
        )
    if config.train.early_stopping_patience:
        raise UserError(
            "train.early_stopping_patience: grpo's validation loss is mostly its KL penalty, not a measure of the "
            "answers (see val_reward); remove early stopping for grpo"
        )
    resolve_rewards(params.rewards, config.plugins)


def _needs(config: RunConfig) -> dict[str, str | None]:
    """A frozen copy of the base as reference, unless beta is 0 or the adapter can be disabled."""
    params = config.method
    assert isinstance(params, GrpoParams)
    return frozen_reference(config, params.beta != 0)


register_method(
    "grpo",
    Method(
        params=GrpoParams,
        data_kinds=frozenset({"chat"}),
        collate=collate_prompts,
        loss=grpo_loss,
        count=count_prompts,
        metrics=("reward", "reward_std", "kl", "answer_tokens"),
        packing=False,
        needs=_needs,
        check=_check,
        shardable=False,
    ),
)
