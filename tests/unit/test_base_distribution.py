"""data.replay.target: distribution — replayed samples train toward the base model's next-token distribution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.config.schema import RunConfig
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.data.soft_targets import distribution_loss
from tuneforge.errors import UserError
from tuneforge.methods.base import METHODS
from tuneforge.methods.loss import causal_lm_loss_sum
from tuneforge.methods.sft import collate_sft
from tuneforge.train.base_distribution import record_base_distributions
from tuneforge.train.replay import REPLAY_DATASET


def test_the_loss_is_the_cross_entropy_over_the_top_tokens_and_the_rest():
    base = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.0, -1.0]]), dim=-1)
    top = base.topk(2, dim=-1)
    p = base.exp()[0]
    rest = 1 - p[0] - p[1]
    expected = -(p[0] * base[0, 0] + p[1] * base[0, 1] + rest * torch.log(rest))
    logits = base.clone().requires_grad_(True)
    loss = distribution_loss(logits, top.indices, top.values)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.sum().backward()  # the model already has the base distribution over {top 1, top 2, the rest}: a minimum
    assert logits.grad.abs().max().item() < 1e-6
    moved = torch.tensor([[0.0, 3.0, 1.0, 0.5, 0.0, -1.0]])  # its likeliest token demoted: a larger loss
    assert distribution_loss(moved, top.indices, top.values).item() > loss.item() + 0.5


def _samples(tokens: int = 12) -> list[RenderedSample]:
    generator = torch.Generator().manual_seed(3)
    rows = []
    for index, length in enumerate((tokens, tokens + 5, tokens - 3)):
        ids = torch.randint(5, 200, (length,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * 4 + ids[4:]
        rows.append(RenderedSample(ids, labels, dataset=REPLAY_DATASET if index != 1 else "mine"))
    return rows


@pytest.mark.parametrize("packing", [True, False])
def test_replayed_samples_train_toward_the_base_and_the_rest_toward_their_tokens(tiny_llama_dir: Path, packing: bool):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    samples = _samples()
    assert record_base_distributions(model, samples) == 2
    own = samples[1]
    assert own.base_distribution is None
    replayed = samples[0].base_distribution
    assert replayed is not None and tuple(replayed.ids.shape) == (
        sum(t != IGNORE_INDEX for t in samples[0].labels[1:]),
        64,
    )

    batch = collate_sft(samples, packing, pad_id=0)
    total = causal_lm_loss_sum(model, batch)
    plain = causal_lm_loss_sum(model, collate_sft([own], packing, pad_id=0))
    soft = sum(causal_lm_loss_sum(model, collate_sft([s], packing, pad_id=0)).item() for s in (samples[0], samples[2]))
    assert total.item() == pytest.approx(plain.item() + soft, rel=1e-5)  # each position scored by its own rule
    model.zero_grad()
    causal_lm_loss_sum(model, collate_sft([samples[0], samples[2]], packing, pad_id=0)).backward()
    grads = [p.grad.abs().max().item() for p in model.parameters() if p.grad is not None]
    assert max(grads) < 1e-4  # the base model is where the replayed samples' loss is lowest
    model.zero_grad()
    plain.backward()
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) > 1e-3


def test_a_method_that_cannot_train_toward_a_distribution_is_refused():
    data = {"train": ["x.json"], "replay": {"target": "distribution"}}
    config = RunConfig.model_validate({"model": {"name_or_path": "m"}, "data": data, "method": {"name": "dpo"}})
    with pytest.raises(UserError, match="data.replay.target: distribution needs .*sft.*set data.replay.target to"):
        METHODS.get("dpo").check_config(config)
    sft = RunConfig.model_validate({"model": {"name_or_path": "m"}, "data": data})
    METHODS.get("sft").check_config(sft)
