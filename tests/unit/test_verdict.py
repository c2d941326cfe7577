"""The end-of-run verdict on synthetic loss curves: each kind, its evidence numbers, and robustness to noise."""

from __future__ import annotations

import math
import random
import re

from tuneforge.train.verdict import diagnose


def records(train: list[float], val: dict[int, float] | None = None) -> list[dict]:
    """Metrics records as the loop writes them: a train loss per step, val_loss at some steps."""
    out = []
    for step, loss in enumerate(train, start=1):
        record = {"step": step, "loss": loss, "lr": 1e-4}
        if val and step in val:
            record["val_loss"] = val[step]
        out.append(record)
    return out


def test_underfitting_when_the_loss_is_still_falling():
    train = [3.0 - 0.02 * step for step in range(1, 51)]
    verdict = diagnose(records(train, {10: 2.9, 20: 2.7, 30: 2.5, 40: 2.3, 50: 2.1}))
    assert verdict.kind == "underfitting"
    assert "train loss was still falling" in verdict.evidence and "steps 41-50" in verdict.evidence
    assert "val loss fell 2.30 → 2.10 between steps 40 and 50" in verdict.evidence
    assert "epochs" in verdict.advice and "learning_rate" in verdict.advice


def test_overfitting_names_where_validation_turned():
    train = [0.4 + 1.6 * math.exp(-step / 15) for step in range(1, 81)]
    val = {20: 1.3, 40: 1.23, 60: 1.4, 80: 1.51}
    verdict = diagnose(records(train, val))
    assert verdict.kind == "overfitting"
    assert verdict.evidence.startswith("val loss rose from 1.23 at step 40 to 1.51 at step 80 while train loss fell")
    train_then, train_end = re.findall(r"fell ([\d.]+) → ([\d.]+)", verdict.evidence)[0]
    assert float(train_then) > float(train_end)
    assert "fewer epochs" in verdict.advice and "step 40" in verdict.advice


def test_divergence_when_the_loss_climbs_far_above_its_minimum():
    train = [3.0 - 0.1 * s for s in range(20)] + [1.1 + 0.35 * s for s in range(20)]
    verdict = diagnose(records(train, {20: 1.2, 40: 8.0}))
    assert verdict.kind == "divergence"  # wins over overfitting: validation rose too, but train did not fall
    assert "train loss rose from" in verdict.evidence and "at step 40" in verdict.evidence
    assert "Lower train.learning_rate" in verdict.advice


def test_divergence_when_the_loss_ends_above_where_it_started():
    train = [2.0, 1.9, 1.8, 2.5, 3.5, 5.0, 7.0, 9.0]
    assert diagnose(records(train)).kind == "divergence"


def test_converged_when_the_curves_flatten_even_with_noise():
    rng = random.Random(0)
    train = [1.0 + math.exp(-step / 4) + rng.uniform(-0.03, 0.03) for step in range(1, 61)]
    val = {15: 1.2, 30: 1.11, 45: 1.1, 60: 1.105}
    verdict = diagnose(records(train, val))
    assert verdict.kind == "converged", verdict
    assert "levelled off at 1.0" in verdict.evidence and "best val loss 1.10 at step 45" in verdict.evidence


def test_too_few_steps_are_inconclusive_and_missing_values_are_ignored():
    assert diagnose(records([2.0, 1.5, 1.2])).kind == "inconclusive"
    rows = records([2.0] + [1.0] * 24, {5: 1.1})
    rows[5]["val_loss"] = None
    assert diagnose(rows).kind == "converged"


def test_a_short_run_gets_no_verdict_on_its_curves():
    """13 steps once ended "converged: train loss levelled off (changed 0.078 over steps 12-13)": two points."""
    train = [2.4, 2.1, 1.9, 1.75, 1.6, 1.5, 1.42, 1.36, 1.3, 1.26, 1.22, 1.2, 1.12]
    verdict = diagnose(records(train, {7: 1.5, 13: 1.3}))
    assert verdict.kind == "inconclusive"
    assert verdict.evidence.startswith("only 13 training losses (steps 1-13) and 2 validation evaluations logged")
    assert "a verdict needs 20 losses, and 3 evaluations" in verdict.evidence
    assert "at least 20 optimizer steps" in verdict.advice
    # the same curve, long enough, gets its verdict
    assert diagnose(records(train + [1.12 + 0.001 * (i % 2) for i in range(12)])).kind == "converged"
    # divergence shows in a few points, and overfitting in enough evaluations, however short the run
    assert diagnose(records([2.0, 1.9, 1.8, 2.5, 3.5, 5.0, 7.0, 9.0])).kind == "divergence"


def test_verdict_as_dict_and_line():
    verdict = diagnose(records([3.0 - 0.1 * s for s in range(20)]))
    assert verdict.as_dict() == {"kind": verdict.kind, "evidence": verdict.evidence, "advice": verdict.advice}
    assert verdict.line().startswith("underfitting: ")


def test_a_small_but_sustained_validation_rise_is_overfitting():
    train = [7.0 - 0.3 * step for step in range(1, 10)]
    val = {5: 5.55, 6: 5.40, 7: 5.35, 8: 5.358, 9: 5.387}  # what early stopping with patience 2 sees
    verdict = diagnose(records(train, val))
    assert verdict.kind == "overfitting"
    assert verdict.evidence.startswith("val loss rose from 5.35 at step 7 to 5.39 at step 9 while train loss fell")


def test_validation_past_its_best_is_not_underfitting():
    train = [3.0 - 0.02 * step for step in range(1, 51)]
    verdict = diagnose(records(train, {10: 2.9, 20: 2.7, 30: 2.6, 40: 2.5, 50: 2.51}))
    assert verdict.kind == "converged"
    assert verdict.evidence.startswith("validation loss stopped improving while train loss still fell")
