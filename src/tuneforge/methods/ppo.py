"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022): reinforcement learning with a value model.

`method: {name: ppo, max_new_tokens, temperature, top_p, kl_coef, target_kl, horizon, gamma, lam, cliprange,
cliprange_value, vf_coef, whiten, rewards}` on chat data (each conversation's final answer is the reference the
rule rewards may compare with). For every prompt the policy samples an answer; `rewards` score it (a reward model
from a `reward` run, `{name: reward_model, path}`, or rule rewards and your own functions, as in grpo). The score
is the reward of the answer's last token; every token also pays a KL penalty -β·(log π - log π_ref) towards the
frozen reference. A value head on the policy's last hidden state estimates each token's return; advantages come
from generalised advantage estimation (GAE, γ and λ), optionally whitened over the batch, and the loss per token
is the clipped policy objective plus vf_coef × the clipped value loss, averaged per answer.

β is fixed, or with `target_kl` it follows the adaptive controller of Ziegler et al.: after every training batch
β ← β·(1 + clip(KL/target - 1, -0.2, 0.2)·answers/horizon); its value is kept in checkpoints, so a resumed run
continues with the same β. One policy update per batch of samples (the sampling weights are the updated ones, so
the probability ratio is 1 in value and only its gradient counts). The value head trains with the adapter and is
part of the checkpoints; the saved model is the policy.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from tuneforge.config.schema import MethodParams, RunConfig
from tuneforge.data.render import IGNORE_INDEX
from tuneforge.errors import UserError
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.grpo import answer_means, collate_prompts, count_prompts
from tuneforge.methods.loss import frozen_reference, supervised_logits
from tuneforge.methods.rewards import ExactAnswerReward, RewardSpec, resolve_rewards, score_answer
from tuneforge.methods.rollout import answer_batch, can_pack, reference_token_log_probs, sample_answers, unpadded

__all__ = ["PpoParams", "adaptive_kl", "attach_value_head", "gae", "ppo_loss", "token_rewards"]

_VALUE_HEAD = "tuneforge_value_head"


class PpoParams(MethodParams):
    """`method:` keys of ppo."""

    name: Literal["ppo"] = Field("ppo", description="Training method.")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Length limit of each sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers (and of their scores).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set of this mass.")
    kl_coef: float = Field(
        0.05, ge=0, description="β: weight of the per-token KL penalty (the start value if adaptive)."
    )
    target_kl: float | None = Field(
        None, gt=0, description="Adapt β so the KL to the reference stays near this (nats per answer); null: fixed β."
    )
    horizon: int = Field(10000, ge=1, description="Answers over which the adaptive controller moves β fully.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ of future token rewards.")
    lam: float = Field(0.95, ge=0, le=1, description="λ of generalised advantage estimation.")
    cliprange: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio.")
    cliprange_value: float = Field(0.2, gt=0, description="Clip range of the value update.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    whiten: bool = Field(True, description="Normalise the advantages of a batch to mean 0 and standard deviation 1.")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [ExactAnswerReward()],
        min_length=1,
        description="Rewards scoring each answer, summed with their weights (as in grpo): {name: reward_model, "
        "path: RUN}, {name: exact_answer}, {name: format, pattern}, {name: length, target}, or {function: ...}.",
    )


def attach_value_head(model: Any, params: MethodParams | None = None) -> torch.nn.Linear:
    """Give the policy a trainable value head (hidden size → 1), zero-initialised, and return it."""
    config = model.config if hasattr(model, "config") else model.get_base_model().config
    head = torch.nn.Linear(int(config.hidden_size), 1).to(next(model.parameters()).device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    model.add_module(_VALUE_HEAD, head)
    return head


def _logps_and_values(model: Any, batch: Batch, temperature: float) -> tuple[torch.Tensor, ...]:
    """(log-prob of each answer token, the value at its position, its answer index) in one forward pass."""
    captured: dict[str, torch.Tensor] = {}
    head = model.get_output_embeddings()

    def keep_input(module: Any, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        captured["hidden"] = args[0]  # returning nothing leaves the output as it is

    hook = head.register_forward_hook(keep_input)
    try:
        logits, targets, sequences = supervised_logits(model, batch)
    finally:
        hook.remove()
    logits = logits / temperature if temperature != 1.0 else logits
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    hidden = captured["hidden"]  # what the output layer read: the kept positions (packed) or every position
    if batch["targets"].shape[0] == 1 and "attention_mask" not in batch:
        hidden = hidden[0]
    else:
        keep = batch["targets"] != IGNORE_INDEX
        hidden = hidden[:, hidden.shape[1] - keep.shape[1] :][keep]
    values = getattr(model, _VALUE_HEAD)(hidden.float()).squeeze(-1)
    return logps, values, sequences


def token_rewards(kl: torch.Tensor, scores: torch.Tensor, sequences: torch.Tensor, beta: float) -> torch.Tensor:
    """-β·KL per token, plus each answer's score on its last token."""
    rewards = -beta * kl
    last = torch.zeros(len(scores), dtype=torch.long, device=kl.device).scatter_reduce(
        0, sequences, torch.arange(len(sequences), device=kl.device), reduce="amax", include_self=False
    )
    return rewards.index_add(0, last, scores.to(rewards))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, sequences: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) per token by generalised advantage estimation within each answer (value 0 after it)."""
    advantages = torch.zeros_like(rewards)
    next_value, running = 0.0, 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if t == len(rewards) - 1 or sequences[t + 1] != sequences[t]:
            next_value, running = 0.0, 0.0  # the last token of an answer
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


def adaptive_kl(beta: float, kl: float, target: float, answers: int, horizon: int) -> float:
    """The controller of Ziegler et al. 2019: β moves towards keeping the KL at `target`."""
    error = max(-0.2, min(0.2, kl / target - 1))
    return beta * (1 + error * answers / horizon)


def ppo_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Sample an answer per prompt, score it, and return the summed per-answer PPO losses."""
    assert isinstance(params, PpoParams)
    tokenizer = models.tokenizer
    assert tokenizer is not None, "ppo decodes its sampled answers: MethodModels.tokenizer is required"
    beta = models.state.setdefault("kl_coef", params.kl_coef)
    prompts = unpadded(batch["prompt_ids"], batch["prompt_mask"])
    references = [
        tokenizer.decode(a, skip_special_tokens=True).strip()
        for a in unpadded(batch["answer_ids"], batch["answer_mask"])
    ]
    sampling = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
    answers = sample_answers(model, tokenizer, batch["prompt_ids"], batch["prompt_mask"], 1, **sampling)
    texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
    prompt_texts = [tokenizer.decode(p, skip_special_tokens=False) for p in prompts]
    scores = torch.tensor(
        [score_answer(params.rewards, t, r, p)[0] for t, r, p in zip(texts, references, prompt_texts, strict=True)]
    )

    device = batch["prompt_ids"].device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = answer_batch(prompts, answers, can_pack(model), pad, device)
    logps, values, sequences = _logps_and_values(model, inputs, params.temperature)
    ref = reference_token_log_probs(model, models.reference, inputs, params.temperature)
    with torch.no_grad():
        kl = logps.detach() - ref
        rewards = token_rewards(kl, scores.to(device), sequences, beta)
        advantages, returns = gae(rewards, values.detach(), sequences, params.gamma, params.lam)
        if params.whiten and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = torch.exp(logps - logps.detach())
    policy = -torch.min(ratio * advantages, ratio.clamp(1 - params.cliprange, 1 + params.cliprange) * advantages)
    old = values.detach()
    clipped = old + (values - old).clamp(-params.cliprange_value, params.cliprange_value)
    value_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    loss = answer_means(policy + params.vf_coef * value_loss, sequences, len(answers)).sum()
    answer_kl = float(kl.sum())  # the answers' KL to the reference (nats per answer), summed over the batch
    if model.training and params.target_kl is not None:
        models.state["kl_coef"] = adaptive_kl(
            beta, answer_kl / len(answers), params.target_kl, len(answers), params.horizon
        )
    n = float(len(answers))
    metrics = {
        "reward": (float(scores.sum()), n),
        "kl": (answer_kl, n),
        "kl_coef": (beta * n, n),
        "value_loss": (float(value_loss.detach().sum()), float(value_loss.numel())),
        "answer_tokens": (float(sum(len(a) for a in answers)), n),
    }
    return LossSums(loss, metrics)


def _check(config: RunConfig) -> None:
    if config.data.train_on_prompt:
        raise UserError("data.train_on_prompt: ppo samples its own answers and learns only from them; set it to false")
    resolve_rewards(config.method.rewards, config.plugins)  # type: ignore[attr-defined]


register_method(
    "ppo",
    Method(
        params=PpoParams,
        data_kinds=frozenset({"chat"}),
        collate=collate_prompts,
        loss=ppo_loss,
        count=count_prompts,
        metrics=("reward", "kl", "kl_coef", "value_loss", "answer_tokens"),
        packing=False,
        needs=frozen_reference,
        check=_check,
        prepare=attach_value_head,
        shardable=False,
    ),
)
