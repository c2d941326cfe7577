"""PPO's pieces on hand-computed cases: token rewards, GAE, the adaptive KL controller, the value head."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.methods.ppo import adaptive_kl, attach_value_head, gae, token_rewards


def test_token_rewards_put_the_score_on_each_answers_last_token():
    kl = torch.tensor([0.5, -0.5, 1.0, 2.0, 0.0])
    sequences = torch.tensor([0, 0, 0, 1, 1])
    rewards = token_rewards(kl, torch.tensor([3.0, -1.0]), sequences, beta=0.1)
    torch.testing.assert_close(rewards, torch.tensor([-0.05, 0.05, -0.1 + 3.0, -0.2, 0.0 - 1.0]))


def test_gae_within_each_answer():
    rewards = torch.tensor([0.0, 1.0, 2.0])
    values = torch.tensor([0.5, 0.25, 4.0])
    sequences = torch.tensor([0, 0, 1])
    advantages, returns = gae(rewards, values, sequences, gamma=0.9, lam=0.5)
    # answer 0: δ1 = 1 - 0.25 = 0.75 (last token: no next value); δ0 = 0 + 0.9·0.25 - 0.5 = -0.275
    #           A1 = 0.75; A0 = -0.275 + 0.9·0.5·0.75 = 0.0625. answer 1: A = 2 - 4 = -2
    torch.testing.assert_close(advantages, torch.tensor([0.0625, 0.75, -2.0]))
    torch.testing.assert_close(returns, advantages + values)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [(6.0, 1.0), (9.0, 1.0 + 0.2 * 8 / 100), (3.0, 1.0 - 0.2 * 8 / 100), (6.6, 1.0 + 0.1 * 8 / 100)],
)
def test_the_adaptive_kl_controller_moves_beta_towards_the_target(kl: float, expected: float):
    assert adaptive_kl(1.0, kl, target=6.0, answers=8, horizon=100) == pytest.approx(expected)


def test_the_value_head_starts_at_zero_and_trains(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    head = attach_value_head(model)
    assert head.in_features == model.config.hidden_size and head.weight.requires_grad
    assert float(head.weight.abs().sum()) == 0.0 and "tuneforge_value_head.weight" in dict(model.named_parameters())
