"""A packed row computes exactly what separate samples compute; best-fit packing; the loop's packed steps."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.data import IGNORE_INDEX, Conversation, Message, render_conversation
from tuneforge.data.packing import best_fit_packs, collate_packed, collate_padded
from tuneforge.data.render import RenderedSample
from tuneforge.methods import METHODS
from tuneforge.train.batches import collate_rows, plan_steps, step_groups, training_rows
from tuneforge.train.settings import LoopSettings
from tuneforge.train.step import optimizer_step

REL = 1e-4
PAD_ID = 0

TURNS = [
    [("user", "Hi"), ("assistant", "Hello!")],
    [("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris.")],
    [
        ("system", "Be terse."),
        ("user", "How many legs does a spider have?"),
        ("assistant", "A spider has eight legs."),
        ("user", "你好！"),
        ("assistant", "你好，世界！今天天气很好，我们去公园散步吧。"),
    ],
    [
        ("user", "Tell me a story."),
        (
            "assistant",
            "Once upon a time, in a quiet village near the mountains, there lived an old baker who loved music.",
        ),
    ],
]


@pytest.fixture(scope="module", params=["tiny_llama_dir", "tiny_qwen_dir"])
def model_dir(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=request.param)
    model.eval()
    return model


@pytest.fixture(scope="module")
def samples(tiny_llama_dir) -> list[RenderedSample]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)  # both tiny models share this tokenizer
    rendered = [
        render_conversation(tokenizer, Conversation([Message(role, text) for role, text in turns]), 512)
        for turns in TURNS
    ]
    assert len({len(s.input_ids) for s in rendered}) == len(rendered)
    return rendered


def spans(pack: list[RenderedSample]) -> list[slice]:
    """Where each sample of a pack sits in its packed row."""
    out, start = [], 0
    for sample in pack:
        out.append(slice(start, start + len(sample.input_ids)))
        start += len(sample.input_ids)
    return out


def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"))


def forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    return model(**inputs, use_cache=False).logits


@torch.no_grad()
def alone_losses(model, samples: list[RenderedSample]) -> list[float]:
    """Each sample in a plain forward pass of its own: no position_ids, no mask, no collation."""
    losses = []
    for sample in samples:
        logits = model(input_ids=torch.tensor([sample.input_ids]), use_cache=False).logits[0, :-1]
        losses.append(loss_sum(logits, torch.tensor(sample.labels[1:])))
    return losses


@torch.no_grad()
def packed_losses(model, pack: list[RenderedSample]) -> list[float]:
    """Per-sample losses from ONE forward pass over the packed row, read off each sample's span."""
    batch = collate_packed(pack)
    logits = forward(model, batch)[0]
    return [loss_sum(logits[span], batch["targets"][0, span]) for span in spans(pack)]


# ---------------------------------------------------------------------------------------------------- equivalence


def test_packed_row_losses_equal_each_sample_alone(model, samples):
    alone = alone_losses(model, samples)
    assert all(loss > 0 for loss in alone) and len(set(alone)) == len(alone)
    for pack in (samples, samples[::-1]):
        expected = alone if pack is samples else alone[::-1]
        assert packed_losses(model, pack) == pytest.approx(expected, rel=REL)


@torch.no_grad()
def test_padded_batch_losses_equal_each_sample_alone(model, samples):
    batch = collate_padded(samples, PAD_ID)
    logits = forward(model, batch)
    padded = [loss_sum(logits[row], batch["targets"][row]) for row in range(len(samples))]
    assert padded == pytest.approx(alone_losses(model, samples), rel=REL)


# ---------------------------------------------------------------------------------------------------- isolation


def scrambled(sample: RenderedSample, seed: int) -> RenderedSample:
    """The same sample with different token ids (same length and labels mask)."""
    rng = random.Random(seed)
    ids = [(t + rng.randrange(5, 300)) % 700 + 4 for t in sample.input_ids]
    labels = [IGNORE_INDEX if label == IGNORE_INDEX else i for label, i in zip(sample.labels, ids, strict=True)]
    return RenderedSample(ids, labels)


@torch.no_grad()
def test_changing_one_sample_leaves_the_others_logits_unchanged(model, samples):
    a, b, c = samples[2], samples[0], samples[3]
    original = collate_packed([a, b, c])
    changed = collate_packed([scrambled(a, 1), b, c])
    assert not torch.equal(original["input_ids"], changed["input_ids"])
    before, after = forward(model, original)[0], forward(model, changed)[0]
    span_a, span_b, span_c = spans([a, b, c])
    assert not torch.allclose(before[span_a], after[span_a], atol=1e-3)  # A itself did change
    torch.testing.assert_close(after[span_b], before[span_b], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after[span_c], before[span_c], rtol=1e-5, atol=1e-5)

    # control: one running position sequence joins the samples, and then B does see A
    for batch in (original, changed):
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
    leaked_before, leaked_after = forward(model, original)[0], forward(model, changed)[0]
    assert not torch.allclose(leaked_before[span_b], leaked_after[span_b], atol=1e-3)


# ---------------------------------------------------------------------------------------------------- best fit


def next_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """The naive packing: fill packs with samples in their given order, open a new one when the next won't fit."""
    packs: list[list[int]] = [[]]
    used = 0
    for index, length in enumerate(lengths):
        if packs[-1] and used + length > capacity:
            packs.append([])
            used = 0
        packs[-1].append(index)
        used += length
    return packs


def test_best_fit_packs_every_index_once_within_capacity():
    rng = random.Random(0)
    for capacity in (16, 128, 512):
        lengths = [rng.randint(1, capacity) for _ in range(300)]
        packs = best_fit_packs(lengths, capacity)
        assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in pack) <= capacity for pack in packs)
        assert len(packs) >= -(-sum(lengths) // capacity)
        assert best_fit_packs(lengths, capacity) == packs  # deterministic
        assert len(packs) <= len(next_fit(lengths, capacity))


def test_best_fit_beats_naive_packing_on_a_crafted_case():
    lengths = [6, 5, 4, 5]  # in order: [6] [5, 4] [5]; best fit: [6, 4] [5, 5]
    assert next_fit(lengths, 10) == [[0], [1, 2], [3]]
    assert best_fit_packs(lengths, 10) == [[0, 2], [1, 3]]


def test_best_fit_picks_the_tightest_pack():
    # 12 and 10 open two packs (room 8 and 10), 9 fits only the second (room 1 left); the 1 goes into the
    # tightest pack that fits, the second, where first fit would have taken the first
    assert best_fit_packs([1, 9, 12, 10], 20) == [[2], [3, 1, 0]]


def test_best_fit_keeps_an_oversized_sample_alone():
    assert best_fit_packs([15, 3, 3], 10) == [[0], [1, 2]]
    assert best_fit_packs([], 10) == []
    with pytest.raises(ValueError):
        best_fit_packs([1], 0)


# ---------------------------------------------------------------------------------------------------- the loop


def settings(packing: bool, batch_size: int = 2, grad_accum: int = 1, cutoff_len: int = 128) -> LoopSettings:
    return LoopSettings(
        learning_rate=1e-3,
        epochs=1,
        max_steps=0,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_grad_norm=0.0,
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        seed=0,
        eval_steps=None,
        logging_steps=1,
        packing=packing,
        pad_id=PAD_ID,
        cutoff_len=cutoff_len,
    )


def test_steps_count_micro_batches_of_packs():
    train = [RenderedSample([1] * 30, [1] * 30) for _ in range(10)]
    packs = training_rows(train, settings(True))
    assert [len(pack) for pack in packs] == [4, 4, 2]
    assert plan_steps(len(packs), settings(True)) == (2, 2)
    singles = training_rows(train, settings(False))
    assert singles == [[i] for i in range(10)]
    assert plan_steps(len(singles), settings(False)) == (5, 5)


def test_each_epoch_trains_every_pack_once_in_a_seeded_order():
    rows = [[i, i + 10] for i in range(7)]
    config = settings(True, batch_size=2, grad_accum=2)
    groups = step_groups(rows, config)
    epochs: dict[int, list[list[int]]] = {}
    for _ in range(4):  # two steps per epoch
        epoch, _, group = next(groups)
        epochs.setdefault(epoch, []).extend(row for micro in group for row in micro)
        assert all(len(micro) <= 2 for micro in group)
    assert sorted(epochs[0]) == sorted(epochs[1]) == rows
    assert epochs[0] != epochs[1]
    again = step_groups(rows, config)
    assert [row for micro in next(again)[2] for row in micro] == epochs[0][:4]
    resumed = step_groups(rows, config, epoch=1, index=1)  # a data position: epoch 1, its second step
    assert [row for micro in next(resumed)[2] for row in micro] == epochs[1][4:]


def test_a_micro_batch_of_packs_is_one_packed_row_per_pack(samples):
    method = METHODS.get("sft").bind()
    config = settings(True, cutoff_len=max(len(s.input_ids) for s in samples) + 20)
    rows = training_rows(samples, config)
    assert len(rows) < len(samples)  # some samples share a pack
    batches = collate_rows(method, samples, rows, config)
    assert len(batches) == len(rows)
    for row, batch in zip(rows, batches, strict=True):
        assert "attention_mask" not in batch
        assert batch["input_ids"].shape == (1, sum(len(samples[i].input_ids) for i in row))
        assert batch["input_ids"].shape[1] <= config.cutoff_len
    padded = collate_rows(method, samples, [[0], [1]], settings(False))
    assert len(padded) == 1 and padded[0]["input_ids"].shape[0] == 2


def test_packed_steps_keep_gradient_accumulation_exact(tiny_llama_dir, samples):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    method = METHODS.get("sft").bind()
    config = settings(True, cutoff_len=max(len(s.input_ids) for s in samples) + 20)

    def gradients(batches: list[dict[str, torch.Tensor]]) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = optimizer_step(model, method, batches, config, step=1).loss
        grads = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return loss, grads

    one_row_loss, one_row = gradients([collate_packed(samples)])
    rows = training_rows(samples, config)
    group = [rows[:2], rows[2:]]  # two micro-batches of packs, as one optimizer step sees them
    packs_loss, packs = gradients([batch for micro in group for batch in collate_rows(method, samples, micro, config)])
    assert packs_loss == pytest.approx(one_row_loss, rel=1e-5)
    assert any(float(g.abs().max()) > 0 for g in one_row)
    for reference, accumulated in zip(one_row, packs, strict=True):
        torch.testing.assert_close(accumulated, reference, rtol=1e-5, atol=1e-5)
