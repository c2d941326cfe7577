"""Training numerics: accumulation equals one big batch, gradient clipping, learning-rate schedule shapes,
non-finite losses and gradients stop the run with the step, and deterministic mode fails loudly."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from fixtures.loop_runs import token_samples
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.methods.base import LossSums
from tuneforge.train.batches import to_device
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.loop import train_loop
from tuneforge.train.optim import build_scheduler
from tuneforge.train.precision import make_deterministic
from tuneforge.train.settings import LoopSettings
from tuneforge.train.step import optimizer_step

SFT = METHODS.get("sft")


def tiny(model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")


def settings(**changes) -> LoopSettings:
    values = dict(
        learning_rate=0.05,
        epochs=1,
        max_steps=2,
        batch_size=4,
        grad_accum=1,
        max_grad_norm=1.0,
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        seed=0,
        eval_steps=None,
        logging_steps=1,
        packing=False,
        pad_id=0,
        dtype="fp32",
    )
    return LoopSettings(**{**values, **changes})


def trained_weights(model_dir, tmp_path, samples, **changes) -> tuple[dict[str, torch.Tensor], list[dict]]:
    model = tiny(model_dir)
    log = MetricsLog(tmp_path / "m.jsonl")
    train_loop(model, SFT.bind(), samples, [], settings(**changes), log)
    return {n: p.detach().clone() for n, p in model.named_parameters()}, log.records


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------------- accumulation

# SGD's update is lr × gradient, so a gradient error shows up one to one; float32 sums in another order differ by
# about 1e-7 of the weights, and 1e-6 is the bar. Adam's first update is about lr × sign(gradient): a small rate
# keeps its float noise under the same bar.
TOLERANCE = 1e-6


@pytest.mark.scenario("accumulation")
@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.05), ("adamw", 1e-4)])
def test_accumulating_4_batches_of_1_equals_one_batch_of_4(tiny_llama_dir, tmp_path, optimizer, lr):
    samples = token_samples(8, 3)  # 2 steps of 4 samples of 5 to 16 supervised tokens each
    assert len({len(s.input_ids) for s in samples}) > 3  # unequal lengths: per-batch means would differ
    common = dict(optimizer=optimizer, learning_rate=lr, weight_decay=0.01)
    big, big_log = trained_weights(tiny_llama_dir, tmp_path, samples, batch_size=4, grad_accum=1, **common)
    accumulated, acc_log = trained_weights(tiny_llama_dir, tmp_path, samples, batch_size=1, grad_accum=4, **common)
    start = {n: p.detach() for n, p in tiny(tiny_llama_dir).named_parameters()}
    assert max_difference(big, start) > 100 * TOLERANCE  # the steps moved the weights well beyond the tolerance
    assert max_difference(big, accumulated) <= TOLERANCE
    for a, b in zip(big_log, acc_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"])


def test_accumulation_divides_by_the_tokens_of_the_whole_step(tiny_llama_dir):
    """One step over 4 micro-batches of 1 gives the gradient of the 4 as one batch; the mean of each micro-batch's
    mean (what a per-batch normalisation would give) is told apart."""
    objective = SFT.bind()
    samples = token_samples(4, 3)

    def gradients(batches, per_batch_mean: bool = False) -> list[torch.Tensor]:
        model = tiny(tiny_llama_dir)
        if per_batch_mean:
            for batch in batches:
                (objective.loss(model, batch).loss / objective.count(batch) / len(batches)).backward()
        else:
            optimizer_step(model, objective, batches, settings(max_grad_norm=0.0), step=1)
        return [p.grad.clone() for p in model.parameters()]

    singles = [to_device(objective.collate([s], False, 0), torch.device("cpu")) for s in samples]
    together = gradients([objective.collate(samples, False, 0)])
    accumulated = gradients(singles)
    # padded and unpadded forward passes round differently: compare against the gradients' own scale
    scale = max(float(g.abs().max()) for g in together)
    assert max(float((a - b).abs().max()) for a, b in zip(together, accumulated, strict=True)) <= 1e-5 * scale
    mean_of_means = gradients(singles, per_batch_mean=True)
    assert max(float((a - b).abs().max()) for a, b in zip(together, mean_of_means, strict=True)) > 1e-2 * scale


# ---------------------------------------------------------------------------------------------------- clipping


def test_clipping_scales_the_gradient_to_max_grad_norm_and_reports_the_norm_before(tiny_llama_dir):
    objective = SFT.bind()
    batch = objective.collate(token_samples(4, 5), False, 0)

    def step(max_grad_norm: float) -> tuple[float, list[torch.Tensor]]:
        model = tiny(tiny_llama_dir)
        result = optimizer_step(model, objective, [batch], settings(max_grad_norm=max_grad_norm), step=1)
        return result.grad_norm, [p.grad.clone() for p in model.parameters()]

    reported, raw = step(0.0)  # 0: no clipping
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in raw))  # float64: the reference
    assert reported == pytest.approx(norm, rel=1e-5) and norm > 1.0  # float32 sums of squares: 1e-5

    limit = norm / 4
    reported, clipped = step(limit)
    assert reported == pytest.approx(norm, rel=1e-5)  # the norm before clipping is what is logged
    assert math.sqrt(sum(float((g.double() ** 2).sum()) for g in clipped)) == pytest.approx(limit, rel=1e-5)
    for a, b in zip(clipped, raw, strict=True):
        torch.testing.assert_close(a, b * (limit / norm), rtol=1e-5, atol=1e-9)  # same direction, scaled

    reported, unclipped = step(norm * 10)
    assert reported == pytest.approx(norm, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(unclipped, raw, strict=True))  # under the limit: untouched


# ---------------------------------------------------------------------------------------------------- schedules


def scheduled_lrs(kind: str, warmup: int, total: int, lr: float = 2.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, kind, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    ("kind", "after_warmup"),
    [
        ("cosine", lambda s: 0.5 * (1 + math.cos(math.pi * (s - 3) / 7))),
        ("linear", lambda s: 1 - (s - 3) / 7),
        ("constant", lambda s: 1.0),
    ],
)
def test_schedule_values_follow_the_formula_with_warmup(kind, after_warmup):
    lrs = scheduled_lrs(kind, warmup=3, total=10)
    # warm-up: (step + 1) / (warmup + 1) of the peak, so the first step already learns
    assert lrs[:3] == pytest.approx([2.0 * 0.25, 2.0 * 0.5, 2.0 * 0.75], rel=1e-12)
    assert lrs[3:] == pytest.approx([2.0 * after_warmup(s) for s in range(3, 10)], rel=1e-12)
    assert lrs[3] == 2.0  # the peak right after warm-up


@pytest.mark.parametrize(
    ("kind", "reference"), [("cosine", get_cosine_schedule_with_warmup), ("linear", get_linear_schedule_with_warmup)]
)
def test_decay_after_warmup_equals_the_transformers_schedules(kind, reference):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = reference(optimizer, 4, 20)
    expected = []
    for _ in range(20):
        expected.append(theirs.get_last_lr()[0])
        optimizer.step()
        theirs.step()
    assert scheduled_lrs(kind, 4, 20, lr=1.0)[4:] == pytest.approx(expected[4:], rel=1e-12, abs=1e-15)


def test_the_loop_logs_the_scheduled_rate_of_every_step(tiny_llama_dir, tmp_path):
    changes = dict(scheduler="cosine", warmup_steps=2, max_steps=6, batch_size=1, learning_rate=1e-3)
    _, records = trained_weights(tiny_llama_dir, tmp_path, token_samples(6, 1), **changes)
    expected = [1e-3 / 3, 2e-3 / 3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 6)]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------------- non-finite


def failing_sft(kind: str, from_call: int):
    """SFT whose loss (or one parameter's gradient) becomes `kind` from its `from_call`-th forward pass on."""
    calls = {"n": 0}

    def loss(model, batch, params, models):
        calls["n"] += 1
        sums = SFT.loss(model, batch, params, models)
        if calls["n"] < from_call:
            return sums
        if kind == "inf gradient":
            model.model.norm.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
            return sums
        return LossSums(sums.loss * float(kind), {})

    return dataclasses.replace(SFT, loss=loss).bind()


@pytest.mark.scenario("nonfinite_stop")
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "training loss became nan at optimizer step 3"),
        ("inf", "training loss became inf at optimizer step 3"),
        ("inf gradient", "gradient norm became inf at optimizer step 3"),
    ],
)
@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_a_non_finite_loss_or_gradient_stops_the_run_at_its_step(
    tiny_llama_dir, tmp_path, kind, message, max_grad_norm
):
    model = tiny(tiny_llama_dir)
    log = MetricsLog(tmp_path / "m.jsonl")
    config = settings(batch_size=2, max_steps=5, max_grad_norm=max_grad_norm)
    with pytest.raises(UserError, match=rf"{message}: training diverged.*train.learning_rate"):
        train_loop(model, failing_sft(kind, from_call=3), token_samples(10, 1), [], config, log)
    assert [r["step"] for r in log.records] == [1, 2]  # the bad step is never logged as a number
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in log.records)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())  # and never applied


# ---------------------------------------------------------------------------------------------------- determinism


@pytest.fixture
def restore_determinism(monkeypatch):
    """make_deterministic changes process-wide switches: put them back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_deterministic_mode_refuses_non_deterministic_kernels(restore_determinism):
    make_deterministic(7)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError, match="put_ does not have a deterministic implementation"):
        torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))  # no deterministic CPU kernel


def test_a_non_deterministic_operation_in_training_is_a_user_error(tiny_llama_dir, tmp_path, restore_determinism):
    def loss(model, batch, params, models):
        sums = SFT.loss(model, batch, params, models)
        scratch = torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
        return LossSums(sums.loss + 0 * scratch.sum(), {})

    make_deterministic(0)
    objective = dataclasses.replace(SFT, loss=loss).bind()
    with pytest.raises(UserError, match=r"train.deterministic: put_ has no deterministic implementation.*false"):
        train_loop(tiny(tiny_llama_dir), objective, token_samples(4, 1), [], settings(), MetricsLog(tmp_path / "m"))
