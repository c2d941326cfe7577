"""Parity of tuneforge's preference losses (`tuneforge.methods.preference`) with TRL 1.16 and with the papers.

What is checked:

* DPO sigmoid, hinge and IPO against `DPOTrainer._compute_loss`: TRL's batch loss (the mean over pairs) and the
  rewards, margins and reward accuracy it logs in `_metrics`.
* Label-smoothed (conservative) DPO, hinge and IPO against `CPOTrainer.cpo_loss` fed with the policy/reference
  log-ratios (TRL's DPO sigmoid has no label smoothing; CPO's sigmoid is the same formula on whatever it is given).
* ORPO against `ORPOTrainer.odds_ratio_loss` plus the chosen answer's mean NLL, one pair per batch.
* SimPO against `CPOTrainer.cpo_loss(loss_type="simpo")` on per-token average log-probabilities.
* KTO against `KTOTrainer._compute_loss` (with its `_compute_kl_logps`): the mean over all samples of the weighted
  desirable and undesirable losses, the KL estimate and the mean rewards.
* One hand-computed pair (or KTO batch) per loss, worked out in comments from the papers' formulas; the sigmoid
  loss at zero log-ratio (ln 2), IPO at equal ratios ((1/(2β))²), the missing-reference error, and `log1mexp`
  near 0 and for very negative inputs against series expansions in float64.

Why TRL's code is called through a stub: the loss code of TRL's trainers lives in methods of the trainer classes, and
building a real trainer needs a model, a tokenizer, datasets and an accelerator. The methods only read a handful of
attributes (`beta`, `loss_types`, `accelerator.device`, `_metrics`, ...) and call the model once per forward, so
they are called unbound with a `SimpleNamespace` as `self` and a fake causal LM whose "fused LM head" output gives
each next token's log-probability from a table indexed by token id (all ids are distinct), zero where the label is
-100, as TRL's `add_fused_lm_head` does. The reference log-probabilities are passed precomputed
(`precompute_ref_logps=True`), so no reference model is needed. tuneforge gets the same numbers summed
independently from the table and the completion mask. Everything runs in float64, except TRL's ORPO, which casts
to float32 itself.
"""

from __future__ import annotations

import math
import types
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tuneforge.methods.preference import kto_losses, log1mexp, pair_losses

F64 = torch.float64
TOL: dict[str, float] = {"atol": 1e-5, "rtol": 1e-5}

Pair = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------------- helpers


def _trl(module: str, name: str) -> Any:
    """An attribute of a TRL module; the test is skipped when TRL (a dev dependency) is missing."""
    return getattr(pytest.importorskip(module), name)


def _close(actual: torch.Tensor | float, expected: torch.Tensor | float) -> None:
    """assert_close to 1e-5 (absolute and relative), in float64."""
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64), **TOL)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _rows(gen: torch.Generator, rows: int, width: int, first_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows: a prompt of ≥ 1 token, an answer of ≥ 1 token, then padding; every token id distinct.

    The prompt is never empty, so the first column is never a completion token and TRL's shifted completion mask
    counts the same tokens as the unshifted one.
    """
    prompt = torch.randint(1, width, (rows,), generator=gen)
    answer = 1 + (torch.rand(rows, generator=gen, dtype=F64) * (width - prompt)).long()
    positions = torch.arange(width)
    attention = positions < (prompt + answer)[:, None]
    completion = (positions >= prompt[:, None]) & attention
    input_ids = first_id + torch.arange(rows * width).view(rows, width)
    return {"input_ids": input_ids, "attention_mask": attention.long(), "completion_mask": completion.long()}


def _table(gen: torch.Generator, size: int) -> torch.Tensor:
    """Log-probability of each token id (as the next token), in (-4, -0.01)."""
    return -0.01 - 3.99 * torch.rand(size, generator=gen, dtype=F64)


def _summed(table: torch.Tensor, rows: dict[str, torch.Tensor], prefix: str = "") -> Pair:
    """(summed answer log-probs, answer token counts) per row, as tuneforge's `sequence_log_probs` returns them."""
    mask = rows[f"{prefix}completion_mask"].to(F64)
    return (table[rows[f"{prefix}input_ids"]] * mask).sum(1), mask.sum(1)


class _FakeLM:
    """A causal LM's fused-LM-head forward: log p of each next token, zero where the label is -100."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def __call__(self, input_ids: torch.Tensor, labels: torch.Tensor, **_: Any) -> SimpleNamespace:
        mask = labels[:, 1:] != -100
        log_probs = torch.where(mask, self.table[input_ids[:, 1:]], torch.zeros((), dtype=self.table.dtype))
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(
            log_probs=log_probs, entropy=zeros, mean_logits=zeros, log_sum_sq_probs=zeros, is_top1=mask & False
        )


def _accelerator() -> SimpleNamespace:
    """Single process: gathering is the identity."""
    return SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t, gather_for_metrics=lambda t: t)


def _trainer_stub(**attributes: Any) -> SimpleNamespace:
    """The attributes every TRL loss method reads, plus the given ones."""
    common: dict[str, Any] = {
        "model": SimpleNamespace(training=True),
        "accelerator": _accelerator(),
        "aux_loss_enabled": False,
        "precompute_ref_logps": True,
        "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)},
        "_total_train_tokens": 0,
        "_tp_size": 1,
    }
    return SimpleNamespace(**{**common, **attributes})


def _dpo_stub(loss_type: str, beta: float) -> SimpleNamespace:
    return _trainer_stub(
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        use_weighting=False,
    )


def _cpo_loss(loss_type: str, chosen: torch.Tensor, rejected: torch.Tensor, **params: Any) -> tuple[torch.Tensor, ...]:
    """TRL's `CPOTrainer.cpo_loss` (losses, chosen rewards, rejected rewards) on the given per-pair values."""
    cpo_loss = _trl("trl.experimental.cpo.cpo_trainer", "CPOTrainer").cpo_loss
    stub = SimpleNamespace(
        loss_type=loss_type,
        beta=params.get("beta", 0.1),
        simpo_gamma=params.get("gamma", 0.5),
        label_smoothing=params.get("label_smoothing", 0.0),
        alpha=0.0,
        accelerator=_accelerator(),
    )
    return cpo_loss(stub, chosen, rejected)


def _pairs(gen: torch.Generator, n: int, spread: float = 2.0) -> tuple[Pair, Pair, Pair]:
    """Random chosen and rejected (summed log-probs, token counts) and reference log-probs near the policy's."""
    counts = torch.randint(1, 40, (2, n), generator=gen).to(F64)
    logps = -counts * (0.05 + 2.0 * torch.rand(2, n, generator=gen, dtype=F64))
    ref = logps + spread * torch.randn(2, n, generator=gen, dtype=F64)
    return (logps[0], counts[0]), (logps[1], counts[1]), (ref[0], ref[1])


# ---------------------------------------------------------------------------------------------------- DPO vs TRL


DPO_CASES = [(0, 1, 5, 0.1), (1, 4, 12, 0.5), (2, 16, 33, 2.0), (3, 7, 20, 0.05)]


@pytest.mark.parametrize("loss", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize(("seed", "pairs", "width", "beta"), DPO_CASES)
def test_dpo_matches_trl_compute_loss(loss: str, seed: int, pairs: int, width: int, beta: float) -> None:
    dpo_trainer = _trl("trl.trainer.dpo_trainer", "DPOTrainer")
    gen = torch.Generator().manual_seed(seed)
    rows = _rows(gen, 2 * pairs, width)  # [chosen..., rejected...], as TRL batches them
    table = _table(gen, 2 * pairs * width)
    logps, tokens = _summed(table, rows)
    ref = logps + 2.0 * torch.randn(2 * pairs, generator=gen, dtype=F64)
    inputs = {**rows, "ref_chosen_logps": ref[:pairs], "ref_rejected_logps": ref[pairs:]}

    stub = _dpo_stub(loss, beta)
    trl_loss = dpo_trainer._compute_loss(stub, _FakeLM(table), inputs, return_outputs=False)

    values, chosen_rewards, rejected_rewards = pair_losses(
        loss, (logps[:pairs], tokens[:pairs]), (logps[pairs:], tokens[pairs:]), (ref[:pairs], ref[pairs:]), beta
    )
    _close(values.mean(), trl_loss)
    metrics = stub._metrics["train"]
    _close(chosen_rewards.mean(), metrics["rewards/chosen"][-1])
    _close(rejected_rewards.mean(), metrics["rewards/rejected"][-1])
    _close((chosen_rewards - rejected_rewards).mean(), metrics["rewards/margins"][-1])
    _close((chosen_rewards > rejected_rewards).to(F64).mean(), metrics["rewards/accuracies"][-1])
    _close(logps[:pairs].mean(), metrics["logps/chosen"][-1])  # the fake LM's sums are the ones tuneforge got


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3, 0.45])
@pytest.mark.parametrize(("seed", "n", "beta"), [(0, 1, 0.1), (1, 8, 0.5), (2, 32, 2.0)])
def test_conservative_dpo_matches_trl_cpo_sigmoid_on_log_ratios(
    label_smoothing: float, seed: int, n: int, beta: float
) -> None:
    chosen, rejected, reference = _pairs(torch.Generator().manual_seed(seed), n)
    values, chosen_rewards, rejected_rewards = pair_losses(
        "sigmoid", chosen, rejected, reference, beta, label_smoothing=label_smoothing
    )
    ratios = chosen[0] - reference[0], rejected[0] - reference[1]
    expected, trl_chosen, trl_rejected = _cpo_loss("sigmoid", *ratios, beta=beta, label_smoothing=label_smoothing)
    _close(values, expected)
    _close(chosen_rewards, trl_chosen)  # β·(log π - log π_ref), as in DPO
    _close(rejected_rewards, trl_rejected)


@pytest.mark.parametrize(("seed", "n", "beta"), [(0, 1, 0.1), (1, 8, 0.5), (2, 32, 2.0)])
def test_hinge_and_ipo_match_trl_cpo_on_log_ratios(seed: int, n: int, beta: float) -> None:
    chosen, rejected, reference = _pairs(torch.Generator().manual_seed(seed), n)
    chosen_ratio, rejected_ratio = chosen[0] - reference[0], rejected[0] - reference[1]
    hinge = pair_losses("hinge", chosen, rejected, reference, beta)[0]
    _close(hinge, _cpo_loss("hinge", chosen_ratio, rejected_ratio, beta=beta)[0])
    # IPO on log-ratios averaged per answer token, as TRL's DPO IPO does
    ipo = pair_losses("ipo", chosen, rejected, reference, beta)[0]
    _close(ipo, _cpo_loss("ipo", chosen_ratio / chosen[1], rejected_ratio / rejected[1], beta=beta)[0])


# ---------------------------------------------------------------------------------------------------- ORPO, SimPO vs TRL


@pytest.mark.parametrize(("seed", "n", "beta"), [(0, 1, 0.1), (1, 8, 0.25), (2, 32, 1.0)])
def test_orpo_matches_trl_odds_ratio_loss(seed: int, n: int, beta: float) -> None:
    orpo_trainer = _trl("trl.experimental.orpo.orpo_trainer", "ORPOTrainer")
    chosen, rejected, _ = _pairs(torch.Generator().manual_seed(seed), n)
    avg_chosen, avg_rejected = chosen[0] / chosen[1], rejected[0] / rejected[1]
    stub = SimpleNamespace(beta=beta, accelerator=_accelerator())
    odds_terms, trl_chosen, trl_rejected, _, _ = orpo_trainer.odds_ratio_loss(stub, avg_chosen, avg_rejected)
    # TRL's loss is `policy_nll_loss - losses.mean()`; with one pair per batch the mean is that pair's odds-ratio
    # term and the NLL, taken as the mean cross-entropy of the chosen answer's tokens, is -avg_chosen. (TRL's
    # decoder-only path also counts the prompt tokens in its NLL; tuneforge, like the paper, only the answer's.)
    expected = -avg_chosen - odds_terms

    values, chosen_rewards, rejected_rewards = pair_losses("orpo", chosen, rejected, None, beta)
    _close(values, expected)
    _close(chosen_rewards, trl_chosen)  # β · mean log-prob per token
    _close(rejected_rewards, trl_rejected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize(("seed", "n", "beta", "gamma"), [(0, 1, 2.0, 0.5), (1, 8, 2.5, 1.4), (2, 32, 10.0, 0.0)])
def test_simpo_matches_trl_cpo_simpo(label_smoothing: float, seed: int, n: int, beta: float, gamma: float) -> None:
    chosen, rejected, _ = _pairs(torch.Generator().manual_seed(seed), n)
    values, chosen_rewards, rejected_rewards = pair_losses(
        "simpo", chosen, rejected, None, beta, label_smoothing=label_smoothing, gamma=gamma
    )
    averages = chosen[0] / chosen[1], rejected[0] / rejected[1]  # mean log-prob per token
    expected, trl_chosen, trl_rejected = _cpo_loss(
        "simpo", *averages, beta=beta, gamma=gamma, label_smoothing=label_smoothing
    )
    _close(values, expected)
    _close(chosen_rewards, trl_chosen)
    _close(rejected_rewards, trl_rejected)


# ---------------------------------------------------------------------------------------------------- KTO vs TRL


def _kto_stub(beta: float, desirable_weight: float, undesirable_weight: float) -> SimpleNamespace:
    stub = _trainer_stub(
        calculate_KL=True,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    stub._compute_kl_logps = types.MethodType(_trl("trl.trainer.kto_trainer", "KTOTrainer")._compute_kl_logps, stub)
    return stub


KTO_CASES = [
    (0, 2, 6, 0.1, 1.0, 1.0, -1.5),
    (1, 5, 11, 0.5, 1.0, 1.33, 0.8),
    (2, 16, 24, 0.1, 0.7, 2.0, 0.3),
    (3, 9, 17, 2.0, 1.5, 1.0, -0.4),
]


@pytest.mark.parametrize("labels", ["mixed", "all_desirable", "all_undesirable"])
@pytest.mark.parametrize(("seed", "n", "width", "beta", "w_d", "w_u", "kl_shift"), KTO_CASES)
def test_kto_matches_trl_compute_loss(
    labels: str, seed: int, n: int, width: int, beta: float, w_d: float, w_u: float, kl_shift: float
) -> None:
    kto_trainer = _trl("trl.trainer.kto_trainer", "KTOTrainer")
    gen = torch.Generator().manual_seed(seed)
    rows = _rows(gen, n, width)
    kl_rows = _rows(gen, n, width + 3, first_id=n * width)  # the mismatched prompt-answer pairs
    table = _table(gen, n * width + n * (width + 3))
    logps, _ = _summed(table, rows)
    kl_logps, _ = _summed(table, kl_rows)
    ref = logps + 1.5 * torch.randn(n, generator=gen, dtype=F64)
    ref_kl = kl_logps - kl_shift + 0.3 * torch.randn(n, generator=gen, dtype=F64)
    desirable = {
        "mixed": torch.arange(n) % 3 != 1,
        "all_desirable": torch.ones(n, dtype=torch.bool),
        "all_undesirable": torch.zeros(n, dtype=torch.bool),
    }[labels]
    batch = {
        **rows,
        **{f"KL_{key}": value for key, value in kl_rows.items()},
        "label": desirable,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }

    stub = _kto_stub(beta, w_d, w_u)
    trl_loss = kto_trainer._compute_loss(stub, _FakeLM(table), batch, return_outputs=False)

    kl = (kl_logps - ref_kl).mean().clamp(min=0)  # as tuneforge's kto_loss estimates it
    assert (float(kl) > 0) == (kl_shift > 0), "the case should exercise the clamp it is meant to"
    values, rewards = kto_losses(logps, ref, desirable, kl, beta, w_d, w_u)
    # TRL: nanmean of cat(w_d·desirable losses, w_u·undesirable losses), i.e. the mean over all samples
    _close(values.mean(), trl_loss)
    metrics = stub._metrics["train"]
    _close(kl, metrics["kl"][-1])
    if desirable.any():
        _close(rewards[desirable].mean(), metrics["rewards/chosen"][-1])
    if (~desirable).any():
        _close(rewards[~desirable].mean(), metrics["rewards/rejected"][-1])


# ---------------------------------------------------------------------------------------------------- by hand


def test_sigmoid_hand_computed() -> None:
    # chosen: log π = -10, log π_ref = -12 → ratio 2; rejected: -15 vs -14 → ratio -1; z = 2 - (-1) = 3; β = 0.1
    # DPO (Rafailov et al. 2023, eq. 7): -log σ(βz) = log(1 + e^{-0.3}) = log(1.7408182206817179) = 0.5543552444685271
    # conservative, ε = 0.1: -(1-ε)·log σ(x) - ε·log σ(-x) = -log σ(x) + ε·x (log σ(-x) = log σ(x) - x)
    #   = 0.5543552444685271 + 0.1·0.3 = 0.5843552444685271
    chosen, rejected, reference = (_t(-10.0), _t(5.0)), (_t(-15.0), _t(7.0)), (_t(-12.0), _t(-14.0))
    values, chosen_reward, rejected_reward = pair_losses("sigmoid", chosen, rejected, reference, 0.1)
    _close(values, _t(0.5543552444685271))
    _close(chosen_reward, _t(0.2))  # β·2
    _close(rejected_reward, _t(-0.1))  # β·(-1)
    smoothed = pair_losses("sigmoid", chosen, rejected, reference, 0.1, label_smoothing=0.1)[0]
    _close(smoothed, _t(0.5843552444685271))


def test_hinge_hand_computed() -> None:
    # SLiC-style hinge: relu(1 - βz); z = 3 (as above): β = 0.1 → 1 - 0.3 = 0.7; β = 0.5 → relu(1 - 1.5) = 0
    chosen, rejected, reference = (_t(-10.0), _t(5.0)), (_t(-15.0), _t(7.0)), (_t(-12.0), _t(-14.0))
    _close(pair_losses("hinge", chosen, rejected, reference, 0.1)[0], _t(0.7))
    _close(pair_losses("hinge", chosen, rejected, reference, 0.5)[0], _t(0.0))


def test_ipo_hand_computed() -> None:
    # IPO (Azar et al. 2023, eq. 17) on per-token log-ratios: chosen ratio 2 over 4 tokens → 0.5; rejected ratio -1
    # over 2 tokens → -0.5; Δ = 1. β = 0.1: (Δ - 1/(2β))² = (1 - 5)² = 16; β = 0.5: (1 - 1)² = 0
    chosen, rejected, reference = (_t(-10.0), _t(4.0)), (_t(-15.0), _t(2.0)), (_t(-12.0), _t(-14.0))
    _close(pair_losses("ipo", chosen, rejected, reference, 0.1)[0], _t(16.0))
    _close(pair_losses("ipo", chosen, rejected, reference, 0.5)[0], _t(0.0))


def test_orpo_hand_computed() -> None:
    # ORPO (Hong et al. 2024, eq. 4-7): mean log-probs per token: chosen -2/4 = -0.5, rejected -3/3 = -1
    # log odds(y) = log p - log(1 - p): log(1 - e^{-0.5}) = -0.9327521295671886, log(1 - e^{-1}) = -0.45867514538708193
    # log odds ratio = (-0.5 + 1) - (-0.9327521295671886 + 0.45867514538708193) = 0.5 + 0.4740769841801067
    #   = 0.9740769841801067 (= 0.5 + log(1 + e^{-0.5}), since (1 - e^{-0.5}) / (1 - e^{-1}) = 1 / (1 + e^{-0.5}))
    # -log σ(0.9740769841801067) = log(1 + e^{-0.9740769841801067}) = log(1 + 0.3775406687981454) = 0.3202997852375365
    # loss = NLL + λ·(-log σ) = 0.5 + 0.1·0.3202997852375365 = 0.5320299785237537
    values, chosen_reward, rejected_reward = pair_losses("orpo", (_t(-2.0), _t(4.0)), (_t(-3.0), _t(3.0)), None, 0.1)
    _close(values, _t(0.5320299785237537))
    _close(chosen_reward, _t(-0.05))  # λ·(-0.5)
    _close(rejected_reward, _t(-0.1))


def test_simpo_hand_computed() -> None:
    # SimPO (Meng et al. 2024, eq. 6): -log σ(β/|y_w|·log π(y_w) - β/|y_l|·log π(y_l) - γ), β = 2, γ = 0.5
    # mean log-probs -0.5 and -1: 2·(-0.5) - 2·(-1) - 0.5 = 0.5 → log(1 + e^{-0.5}) = 0.4740769841801067
    # with ε = 0.1: + ε·0.5 = 0.5240769841801067
    chosen, rejected = (_t(-2.0), _t(4.0)), (_t(-3.0), _t(3.0))
    values, chosen_reward, rejected_reward = pair_losses("simpo", chosen, rejected, None, 2.0, gamma=0.5)
    _close(values, _t(0.4740769841801067))
    _close(chosen_reward, _t(-1.0))  # β·(-0.5)
    _close(rejected_reward, _t(-2.0))
    smoothed = pair_losses("simpo", chosen, rejected, None, 2.0, label_smoothing=0.1, gamma=0.5)[0]
    _close(smoothed, _t(0.5240769841801067))


def test_kto_hand_computed() -> None:
    # KTO (Ethayarajh et al. 2024, eq. 7), β = 0.1, z_ref = 0.5, λ_D = 1, λ_U = 1.5
    # desirable: ratio -10 - (-12) = 2 → 1 - σ(0.1·(2 - 0.5)) = σ(-0.15) = 0.4625701546562504
    # undesirable: ratio -15 - (-14) = -1 → 1.5·(1 - σ(0.1·(0.5 - (-1)))) = 1.5·σ(-0.15) = 0.6938552319843756
    values, rewards = kto_losses(
        _t(-10.0, -15.0), _t(-12.0, -14.0), torch.tensor([True, False]), _t(0.5), 0.1, 1.0, 1.5
    )
    _close(values, _t(0.4625701546562504, 0.6938552319843756))
    _close(rewards, _t(0.2, -0.1))


# ---------------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_sigmoid_at_zero_log_ratio_is_ln2(beta: float, label_smoothing: float) -> None:
    # z = 0 → -(1-ε)·log σ(0) - ε·log σ(0) = log 2 whatever β and ε
    chosen, rejected = (_t(-3.0, -7.0), _t(3.0, 5.0)), (_t(-4.0, -9.0), _t(4.0, 6.0))
    reference = (_t(-1.0, -2.0), _t(-2.0, -4.0))  # both ratios -2 and -5 on each side: z = 0
    values = pair_losses("sigmoid", chosen, rejected, reference, beta, label_smoothing=label_smoothing)[0]
    _close(values, torch.full((2,), math.log(2), dtype=F64))


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
def test_ipo_with_equal_ratios_is_inverse_two_beta_squared(beta: float) -> None:
    # equal per-token log-ratios (-0.5 each, over different lengths) → Δ = 0 → (0 - 1/(2β))²
    chosen, rejected = (_t(-6.0), _t(4.0)), (_t(-9.0), _t(6.0))
    reference = (_t(-4.0), _t(-6.0))
    _close(pair_losses("ipo", chosen, rejected, reference, beta)[0], _t((1 / (2 * beta)) ** 2))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_reference_losses_need_reference(loss: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        pair_losses(loss, (_t(-1.0), _t(1.0)), (_t(-2.0), _t(1.0)), None, 0.1)


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown preference loss"):
        pair_losses("nope", (_t(-1.0), _t(1.0)), (_t(-2.0), _t(1.0)), (_t(-1.0), _t(-2.0)), 0.1)


# ---------------------------------------------------------------------------------------------------- log1mexp


def _log1mexp_series(x: float) -> float:
    """log(1 - e^x) by series where direct evaluation loses digits, else directly (float64)."""
    if x > -1e-3:  # 1 - e^x = -x·(1 + x/2 + x²/6 + ...) → log(-x) + x/2 + x²/24 + O(x⁴)
        return math.log(-x) + x / 2 + x * x / 24
    if x < -8:  # log(1 - u) = -u - u²/2 - u³/3 - ..., u = e^x ≤ 3.4e-4: seven terms are exact in float64
        u = math.exp(x)
        return -sum(u**k / k for k in range(7, 0, -1))
    return math.log(1 - math.exp(x))


NEAR_ZERO = [-1e-30, -1e-15, -1e-12, -1e-9, -1e-6, -1e-4, -1e-3]
MIDDLE = [-0.01, -0.5, -math.log(2) + 1e-9, -math.log(2), -math.log(2) - 1e-9, -1.0, -5.0, -20.0]
VERY_NEGATIVE = [-31.0, -50.0, -80.0, -200.0, -700.0]


@pytest.mark.parametrize("x", NEAR_ZERO + MIDDLE + VERY_NEGATIVE)
def test_log1mexp_float64_is_exact(x: float) -> None:
    expected = _log1mexp_series(x)
    torch.testing.assert_close(log1mexp(_t(x)), _t(expected), atol=0.0, rtol=1e-12)


@pytest.mark.parametrize("x", NEAR_ZERO + MIDDLE + VERY_NEGATIVE[:3])
def test_log1mexp_float32_is_accurate(x: float) -> None:
    # within float32 precision of the float64 value (the naive log(1 - exp(x)) gives -inf near 0 and 0 far below)
    got = log1mexp(torch.tensor([x], dtype=torch.float32))
    expected = _log1mexp_series(float(torch.tensor(x, dtype=torch.float32)))
    torch.testing.assert_close(got.to(F64), _t(expected), atol=0.0, rtol=1e-5)


def test_log1mexp_limits() -> None:
    assert log1mexp(_t(-math.inf)).item() == 0.0
    # x = 0 (an answer of probability 1) is kept just below 0: very negative but finite, so gradients stay finite
    at_zero = log1mexp(_t(0.0)).item()
    assert math.isfinite(at_zero) and at_zero < -60


def test_orpo_gradient_is_finite_for_a_near_certain_chosen_answer() -> None:
    """torch.where differentiates both branches: for float32 x in (-6e-8, 0) exp(x) rounds to 1 and a naive
    log1p(-exp(x)) branch is -inf, whose backward would make the gradient NaN (TRL's log1mexp does)."""
    # A chosen answer the policy is (almost) sure of: mean log-prob per token -2.5e-9 in float32, which the logits'
    # log_softmax can well produce. The loss is finite (and tiny), and so should its gradient be.
    chosen = torch.tensor([-1e-8], requires_grad=True)
    rejected = torch.tensor([-3.0], requires_grad=True)
    values = pair_losses("orpo", (chosen, torch.tensor([4.0])), (rejected, torch.tensor([3.0])), None, 0.1)[0]
    assert torch.isfinite(values).all()
    values.sum().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


# ---------------------------------------------------------------------------------------------------- reward model


@pytest.mark.parametrize(("seed", "pairs", "center"), [(0, 1, None), (1, 6, None), (2, 5, 0.01), (3, 16, 0.3)])
def test_bradley_terry_matches_trl_reward_trainer(seed: int, pairs: int, center: float | None) -> None:
    from trl.trainer.reward_trainer import RewardTrainer

    from tuneforge.methods.preference import bradley_terry_losses

    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(2 * pairs, 1, generator=generator, dtype=F64) * 3
    stub = _trainer_stub(args=SimpleNamespace(center_rewards_coefficient=center))

    def model(**_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=scores)  # TRL's batch is [chosen..., rejected...]

    inputs = {"input_ids": torch.zeros(2 * pairs, 3, dtype=torch.long), "attention_mask": torch.ones(2 * pairs, 3)}
    expected = RewardTrainer.compute_loss(stub, model, inputs)
    chosen, rejected = scores[:pairs, 0], scores[pairs:, 0]
    got = bradley_terry_losses(chosen, rejected, center or 0.0).mean()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bradley_terry_hand_computed() -> None:
    from tuneforge.methods.preference import bradley_terry_losses

    # s_c = 1.5, s_r = 0.5: -log σ(1) = log(1 + e^-1) = 0.31326168751822286; centring 0.1·(2)² = 0.4
    got = bradley_terry_losses(torch.tensor([1.5], dtype=F64), torch.tensor([0.5], dtype=F64), 0.1)
    torch.testing.assert_close(got, torch.tensor([0.31326168751822286 + 0.4], dtype=F64))
