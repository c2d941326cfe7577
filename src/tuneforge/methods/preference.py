"""The preference losses on per-sequence log-probabilities: DPO (sigmoid), IPO, hinge, ORPO, SimPO and KTO.

Pure functions of tensors, one value per pair (or per KTO sample), so that they can be checked against TRL's
implementations on fixed log-probabilities. `logps` are summed log-probabilities of an answer's tokens and
`tokens` their counts; `ref_*` the same under the frozen reference model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["PAIR_LOSSES", "REFERENCE_FREE", "bradley_terry_losses", "kto_losses", "log1mexp", "pair_losses"]

PAIR_LOSSES = ("sigmoid", "ipo", "hinge", "orpo", "simpo")
REFERENCE_FREE = frozenset({"orpo", "simpo"})


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x, with finite gradients everywhere.

    Each branch gets inputs only from its own side of -ln 2 (torch.where differentiates both branches, and the
    unused one must not produce inf or nan); x is kept strictly below 0 (an answer of probability 1 in float32).
    """
    x = x.clamp(max=-1e-30)
    near_zero = x > -math.log(2)
    safe_near = torch.where(near_zero, x, torch.full_like(x, -1.0))
    safe_far = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log(-torch.expm1(safe_near)), torch.log1p(-torch.exp(safe_far)))


def _smoothed_sigmoid(logits: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """-(1-ε)·logσ(β·z) - ε·logσ(-β·z): the conservative (label-smoothed) sigmoid loss."""
    return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing


def pair_losses(
    loss: str,
    chosen: tuple[torch.Tensor, torch.Tensor],
    rejected: tuple[torch.Tensor, torch.Tensor],
    reference: tuple[torch.Tensor, torch.Tensor] | None,
    beta: float,
    label_smoothing: float = 0.0,
    gamma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair.

    Args:
        loss: sigmoid (DPO), ipo, hinge, orpo or simpo.
        chosen, rejected: (summed log-probs, token counts) of the chosen and rejected answers.
        reference: (chosen, rejected) summed log-probs under the reference; None for orpo and simpo.
        beta: the inverse temperature (DPO β; ORPO's λ; SimPO's β).
        label_smoothing: ε of the conservative sigmoid loss (DPO and SimPO).
        gamma: SimPO's target reward margin γ.
    """
    (c, nc), (r, nr) = chosen, rejected
    if loss in REFERENCE_FREE:
        avg_c, avg_r = c / nc.clamp(min=1), r / nr.clamp(min=1)
        if loss == "orpo":  # Hong et al. 2024, eq. 4-7, with the SFT term on the chosen answer
            log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
            values = -avg_c - beta * F.logsigmoid(log_odds)
        else:  # SimPO, Meng et al. 2024, eq. 6
            values = _smoothed_sigmoid(avg_c - avg_r - gamma / beta, beta, label_smoothing)
        return values, (beta * avg_c).detach(), (beta * avg_r).detach()
    if reference is None:
        raise ValueError(f"the {loss} loss needs reference log-probabilities")
    chosen_ratio, rejected_ratio = c - reference[0], r - reference[1]
    if loss == "sigmoid":
        values = _smoothed_sigmoid(chosen_ratio - rejected_ratio, beta, label_smoothing)
    elif loss == "hinge":
        values = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    elif loss == "ipo":  # Azar et al. 2023, eq. 17, log-ratios averaged per token as TRL does
        delta = chosen_ratio / nc.clamp(min=1) - rejected_ratio / nr.clamp(min=1)
        values = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss!r}; use one of {', '.join(PAIR_LOSSES)}")
    return values, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def bradley_terry_losses(chosen: torch.Tensor, rejected: torch.Tensor, center: float = 0.0) -> torch.Tensor:
    """Reward-model loss per pair: -log σ(s_c - s_r) (Ouyang et al. 2022, eq. 1), plus center·(s_c + s_r)², which
    keeps the scores centred on 0 (Eisenstein et al. 2023; TRL's center_rewards_coefficient)."""
    return -F.logsigmoid(chosen - rejected) + center * (chosen + rejected) ** 2


def kto_losses(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, reward) per sample of KTO (Ethayarajh et al. 2024, eq. 7); `kl` is the batch's KL estimate (z_ref).

    Desirable: w_d·(1 - σ(β(r - z))); undesirable: w_u·(1 - σ(β(z - r))), where r = log π/π_ref of the answer.
    """
    ratio = logps - ref_logps
    z = kl.detach()
    values = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - z))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio))),
    )
    return values, (beta * ratio).detach()
