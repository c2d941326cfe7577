"""The end-of-run verdict: what the loss curves say, with the numbers that say it and what to change.

`diagnose` is a pure function of the metrics records (dicts with `step`, `loss` and, at evaluations, `val_loss`).
In order of precedence:

- divergence: the (smoothed) training loss ended far above its minimum, or above where it started;
- overfitting: the validation loss rose clearly (or for two evaluations running) above its best while the
  training loss kept falling;
- underfitting: the training (or validation) loss was still falling clearly at the end, validation at its best;
- converged: none of the above (the curves levelled off, or validation stopped improving).

Runs with fewer than `MIN_POINTS` training losses are "inconclusive"; so are runs with fewer than `MIN_STEPS` that
neither diverged nor overfit (evidence from `MIN_EVALS` or more evaluations): a short stretch of a curve cannot
tell a levelled-off loss from noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MIN_EVALS", "MIN_POINTS", "MIN_STEPS", "Verdict", "diagnose"]

MIN_POINTS = 4  # divergence shows in a few points
MIN_STEPS = 20  # levelled off or still falling: judged on the last fifth of the curve, so at least 4 points there
MIN_EVALS = 3  # overfitting: a best validation loss and a rise after it
RISE = 0.05  # a validation rise of 5% above its best counts as real
STILL_FALLING = 0.05  # a fall of 5% over the last fifth of the run counts as still learning
_Series = list[tuple[int, float]]


@dataclass(frozen=True)
class Verdict:
    """kind: divergence | overfitting | underfitting | converged | inconclusive."""

    kind: str
    evidence: str
    advice: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        """One printable line: kind, evidence and advice."""
        return f"{self.kind}: {self.evidence}. {self.advice}"


def _num(value: float) -> str:
    """A loss for a sentence: two decimals, or two significant digits below 0.1."""
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _series(records: list[dict[str, Any]], key: str) -> _Series:
    return [(int(r["step"]), float(r[key])) for r in records if r.get(key) is not None]


def _smooth(points: _Series) -> _Series:
    """Trailing mean over a window of a tenth of the run (at least 1 point)."""
    window = max(1, len(points) // 10)
    smoothed = []
    for i, (step, _) in enumerate(points):
        recent = [v for _, v in points[max(0, i - window + 1) : i + 1]]
        smoothed.append((step, sum(recent) / len(recent)))
    return smoothed


def _slope(points: _Series) -> float:
    """Least-squares slope of value per step."""
    n = len(points)
    mean_x = sum(s for s, _ in points) / n
    mean_y = sum(v for _, v in points) / n
    var = sum((s - mean_x) ** 2 for s, _ in points)
    return sum((s - mean_x) * (v - mean_y) for s, v in points) / var if var else 0.0


def _divergence(train: _Series) -> Verdict | None:
    smooth = _smooth(train)
    low_step, low = min(smooth, key=lambda p: p[1])
    end_step, end = smooth[-1]
    start = smooth[0][1]
    rose_far = end > 2 * low and end - low > 0.5
    exploded = end > 1.2 * start and end - start > 0.5
    if not (rose_far or exploded):
        return None
    return Verdict(
        "divergence",
        f"train loss rose from {_num(low)} at step {low_step} to {_num(end)} at step {end_step} (it started at {_num(start)})",
        "Lower train.learning_rate (3-10x), lengthen the warm-up (train.warmup_ratio / train.warmup_steps) and keep "
        "train.max_grad_norm > 0",
    )


def _loss_at(points: _Series, step: int) -> float:
    """The value at the last point at or before `step` (the first point if none)."""
    before = [v for s, v in points if s <= step]
    return before[-1] if before else points[0][1]


def _val_turned(val: _Series) -> bool:
    """Validation ended clearly above its best, or stayed above it for the last two or more evaluations, rising."""
    best_step, best = min(val, key=lambda p: p[1])
    after = [v for s, v in val if s > best_step]
    if not after:
        return False
    clear = after[-1] > best * (1 + RISE) and after[-1] - best > 0.01
    sustained = len(after) >= 2 and after[-1] >= after[0]
    return clear or sustained


def _overfitting(train: _Series, val: _Series) -> Verdict | None:
    if len(val) < MIN_EVALS or not _val_turned(val):
        return None
    best_step, best = min(val, key=lambda p: p[1])
    end_step, end = val[-1]
    smooth = _smooth(train)
    train_then, train_end = _loss_at(smooth, best_step), smooth[-1][1]
    if train_end >= train_then:
        return None
    return Verdict(
        "overfitting",
        f"val loss rose from {_num(best)} at step {best_step} to {_num(end)} at step {end_step} while train loss fell "
        f"{_num(train_then)} → {_num(train_end)}",
        "Train fewer epochs (or set train.early_stopping_patience), add more data, or lower train.learning_rate; "
        f"the best validation loss was at step {best_step}",
    )


def _still_falling(points: _Series) -> tuple[float, float, int, int] | None:
    """(value at the start of the last fifth, value at the end, first step, last step) if it fell > 5% there."""
    tail = points[-max(2, len(points) // 5) :]
    first_step, last_step = tail[0][0], tail[-1][0]
    mean = sum(v for _, v in tail) / len(tail)
    fitted_drop = -_slope(tail) * (last_step - first_step)
    if mean <= 0 or fitted_drop / mean <= STILL_FALLING:
        return None
    return mean + fitted_drop / 2, mean - fitted_drop / 2, first_step, last_step


def _underfitting(train: _Series, val: _Series) -> Verdict | None:
    if val and val[-1][1] > min(v for _, v in val):
        return None  # held-out loss is past its best: more of the same training would not help
    falling = _still_falling(train)
    val_falling = len(val) >= 2 and val[-1][1] == min(v for _, v in val) and val[-1][1] < val[-2][1] * (1 - RISE)
    if falling is None and not val_falling:
        return None
    parts = []
    if falling is not None:
        start, end, first, last = falling
        parts.append(f"train loss was still falling at the end: {_num(start)} → {_num(end)} over steps {first}-{last}")
    if val_falling:
        parts.append(
            f"val loss fell {_num(val[-2][1])} → {_num(val[-1][1])} between steps {val[-2][0]} and {val[-1][0]}"
        )
    return Verdict(
        "underfitting",
        "; ".join(parts),
        "Train longer (more train.epochs or train.max_steps) or raise train.learning_rate",
    )


def _converged(train: _Series, val: _Series) -> Verdict:
    tail = train[-max(2, len(train) // 5) :]
    mean = sum(v for _, v in tail) / len(tail)
    change = -_slope(tail) * (tail[-1][0] - tail[0][0])
    falling = _still_falling(train)
    if falling is not None:
        start, end, first, last = falling
        evidence = f"validation loss stopped improving while train loss still fell {_num(start)} → {_num(end)} "
        evidence += f"over steps {first}-{last}"
    else:
        evidence = f"train loss levelled off at {_num(mean)} (changed {abs(change):.2g} over steps "
        evidence += f"{tail[0][0]}-{tail[-1][0]})"
    if val:
        best_step, best = min(val, key=lambda p: p[1])
        evidence += f"; best val loss {_num(best)} at step {best_step}, last {_num(val[-1][1])}"
    return Verdict("converged", evidence, "Nothing to change; more data would be the next lever")


def diagnose(records: list[dict[str, Any]]) -> Verdict:
    """The verdict on a run's metrics records (see the module docstring)."""
    train = _series(records, "loss")
    val = _series(records, "val_loss")
    if len(train) < MIN_POINTS:
        return Verdict(
            "inconclusive",
            f"only {len(train)} training losses logged",
            f"Run at least {MIN_POINTS} optimizer steps (with train.logging_steps=1) to judge the curves",
        )
    early = _divergence(train) or _overfitting(train, val)
    if early is None and len(train) < MIN_STEPS:
        return Verdict(
            "inconclusive",
            f"only {len(train)} training losses (steps {train[0][0]}-{train[-1][0]}) and {len(val)} validation "
            f"evaluations logged: too few to tell a levelled-off or falling loss from noise (a verdict needs "
            f"{MIN_STEPS} losses, and {MIN_EVALS} evaluations to judge overfitting)",
            f"Run at least {MIN_STEPS} optimizer steps with train.logging_steps=1 (and train.eval_steps for "
            f"{MIN_EVALS} or more evaluations) to judge the curves",
        )
    return early or _underfitting(train, val) or _converged(train, val)
