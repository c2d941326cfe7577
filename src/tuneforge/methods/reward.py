"""Reward models: a scalar score for a whole answer, learnt from preference pairs (Bradley-Terry).

`method: {name: reward}`. A linear head on the last hidden state of the final token scores each sequence; the
loss is -log σ(score(chosen) - score(rejected)) per pair (Ouyang et al. 2022, eq. 1), with the model's own
adapter (LoRA, or full fine-tuning) trained along with the head. It reports per step and on the validation pairs
the share of pairs ranked right (`accuracy`) and the mean score margin. The head is saved beside the model as
`model/reward_head.safetensors`; `load_reward_model(run_dir)` gives back a scorer (used by GRPO's `reward_model`
reward).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from tuneforge.config.schema import MethodParams
from tuneforge.data.render import RenderedSample, render_text
from tuneforge.errors import UserError
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.dpo import collate_pairs, count_pairs
from tuneforge.methods.loss import collate_sequences
from tuneforge.methods.preference import bradley_terry_losses
from tuneforge.methods.rewards import REWARDS
from tuneforge.models.load import load_model

__all__ = [
    "HEAD_FILE",
    "RewardModel",
    "RewardParams",
    "attach_head",
    "load_reward_model",
    "reward_model_score",
    "sequence_scores",
]

HEAD_FILE = "reward_head.safetensors"
_HEAD = "tuneforge_reward_head"


class RewardParams(MethodParams):
    """`method: {name: reward}`."""

    name: Literal["reward"] = Field("reward", description="Training method.")
    center_rewards_coefficient: float = Field(
        0.0, ge=0, description="Weight of (score_chosen + score_rejected)², which keeps the scores centred on 0."
    )


def attach_head(model: Any, params: MethodParams | None = None) -> torch.nn.Linear:
    """Give `model` a trainable scalar head (hidden size → 1) and return it."""
    hidden = int(model.config.hidden_size if hasattr(model, "config") else model.get_base_model().config.hidden_size)
    head = torch.nn.Linear(hidden, 1, bias=False).to(next(model.parameters()).device)
    torch.nn.init.normal_(head.weight, std=1 / (hidden + 1) ** 0.5)
    model.add_module(_HEAD, head)
    return head


def _last_positions(batch: Batch, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of the last token of every sequence in the batch."""
    if "sequence_ids" in batch:
        ids = batch["sequence_ids"][0]
        count = int(ids.max()) + 1
        last = torch.zeros(count, dtype=torch.long, device=ids.device).scatter_reduce(
            0, ids, torch.arange(len(ids), device=ids.device), reduce="amax"
        )
        return torch.zeros_like(last), last
    ends = batch["attention_mask"].sum(dim=1) - 1
    return torch.arange(len(ends), device=ends.device), ends


def sequence_scores(model: Any, batch: Batch) -> torch.Tensor:
    """The head's score of each sequence of a batch from `collate_sequences` (one forward pass)."""
    head = getattr(model, _HEAD, None)
    if head is None:
        raise UserError("this model has no reward head: train it with method.name=reward")
    inputs = {k: v for k, v in batch.items() if k not in ("targets", "sequence_ids")}
    out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1]
    rows, positions = _last_positions(batch, batch["input_ids"].shape[1])
    offset = hidden.shape[1] - batch["input_ids"].shape[1]  # virtual tokens in front (prompt learning)
    return head(hidden[rows, positions + offset].float()).squeeze(-1)


def reward_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Bradley-Terry loss per pair; metrics: ranking accuracy and score margin."""
    assert isinstance(params, RewardParams)
    scores = sequence_scores(model, batch)
    chosen, rejected = scores[0::2], scores[1::2]
    values = bradley_terry_losses(chosen, rejected, params.center_rewards_coefficient)
    margin = (chosen - rejected).detach()
    metrics = {"accuracy": float((margin > 0).float().sum()), "margin": float(margin.sum())}
    return LossSums(values.sum(), metrics)


def save_head(model: Any, folder: Path) -> None:
    """Write the head beside the saved model."""
    head = getattr(model, _HEAD)
    save_file({"weight": head.weight.detach().cpu().contiguous()}, str(folder / HEAD_FILE))
    (folder / "reward_head.json").write_text(json.dumps({"hidden_size": head.in_features}), encoding="utf-8")


@dataclass
class RewardModel:
    """A trained reward model: `score(conversations)` gives one number per conversation (higher is better)."""

    model: Any
    tokenizer: Any

    @property
    def answer_suffix(self) -> str:
        """What the chat template writes after an assistant answer (e.g. `<|im_end|>` and a newline)."""
        probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "PROBE-ANSWER"}]
        return render_text(self.tokenizer, probe).split("PROBE-ANSWER", 1)[1]

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> list[float]:
        """Scores of already rendered conversations (chat template included)."""
        samples = []
        for text in texts:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            samples.append(RenderedSample(ids, ids))
        batch = collate_sequences(samples, packing=True, pad_id=0)
        device = next(self.model.parameters()).device
        return sequence_scores(self.model, {k: v.to(device) for k, v in batch.items()}).tolist()

    def score(self, conversations: list[list[dict[str, Any]]]) -> list[float]:
        """Scores of whole conversations (each a list of role/content dicts ending with the answer to judge)."""
        return self.score_texts([render_text(self.tokenizer, conversation) for conversation in conversations])


def load_reward_model(run_dir: str | Path) -> RewardModel:
    """The reward model of a `method.name=reward` run directory."""
    folder = Path(run_dir) / "model"
    if not (folder / HEAD_FILE).is_file():
        raise UserError(
            f"{run_dir} is not a reward-model run (no model/{HEAD_FILE}); train one with method.name=reward"
        )
    loaded = load_model(str(run_dir))
    head = attach_head(loaded.model)
    head.weight.data.copy_(load_file(str(folder / HEAD_FILE))["weight"])
    loaded.model.eval()
    return RewardModel(loaded.model, loaded.tokenizer)


@functools.lru_cache(maxsize=2)
def _cached_reward_model(path: str) -> RewardModel:
    return load_reward_model(path)


@REWARDS.register("reward_model")
def reward_model_score(completion: str, reference: str, prompt: str = "", path: str = "", **keys: Any) -> float:
    """GRPO reward `{name: reward_model, path}`: the reward model's score of the rendered prompt + the answer."""
    scorer = _cached_reward_model(str(Path(path).expanduser().resolve()))
    return scorer.score_texts([prompt + completion + scorer.answer_suffix])[0]


register_method(
    "reward",
    Method(
        params=RewardParams,
        data_kinds=frozenset({"preference"}),
        collate=collate_pairs,
        loss=reward_loss,
        count=count_pairs,
        metrics=("accuracy", "margin"),
        prepare=attach_head,
        save=save_head,
    ),
)
