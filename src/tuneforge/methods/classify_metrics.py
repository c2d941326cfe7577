"""Classification scores from a confusion matrix: accuracy, macro-F1, per-class precision/recall, the printed table
and the confusion-matrix picture.

Conventions (those of scikit-learn with `zero_division=0`): a class never predicted has precision 0, a class with
no sample recall 0, and F1 = 2·TP / (2·TP + FP + FN) (0 when that is 0/0). Macro-F1 is the plain mean of the F1 of
the classes that occur in the true labels or the predictions, so a class absent from both does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_output

__all__ = [
    "classification_scores",
    "confusion_matrix",
    "confusion_plot_pixels",
    "plot_confusion",
    "score_table",
]

_DPI = 100


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], classes: int) -> list[list[int]]:
    """Counts[t][p]: how many samples of class t were predicted as class p."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    counts = [[0] * classes for _ in range(classes)]
    for t, p in zip(true, predicted, strict=True):
        counts[t][p] += 1
    return counts


def classification_scores(confusion: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision, recall, F1, support of a confusion matrix (rows: true class)."""
    classes = len(labels)
    total = sum(sum(row) for row in confusion)
    per_class: dict[str, dict[str, Any]] = {}
    present: list[float] = []
    for index, name in enumerate(labels):
        tp = confusion[index][index]
        support = sum(confusion[index])
        predicted = sum(confusion[row][index] for row in range(classes))
        fp, fn = predicted - tp, support - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
        per_class[name] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
        if support or predicted:
            present.append(f1)
    return {
        "labels": list(labels),
        "samples": total,
        "accuracy": sum(confusion[i][i] for i in range(classes)) / total if total else 0.0,
        "macro_f1": sum(present) / len(present) if present else 0.0,
        "per_class": per_class,
        "confusion": [list(row) for row in confusion],
    }


def score_table(scores: dict[str, Any], what: str = "validation samples") -> list[str]:
    """The scores as a small text table: a headline (accuracy, macro-F1), then one row per class."""
    width = max([5, *(len(name) for name in scores["labels"])])
    lines = [
        f"classification of {scores['samples']} {what}: accuracy {scores['accuracy']:.4f}, "
        f"macro-F1 {scores['macro_f1']:.4f}",
        f"  {'label':<{width}}  precision  recall      f1  support",
    ]
    for name in scores["labels"]:
        row = scores["per_class"][name]
        lines.append(
            f"  {name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}"
        )
    return lines


def _side_pixels(classes: int) -> int:
    return min(320 + 50 * classes, 1600)


def confusion_plot_pixels(classes: int) -> tuple[int, int]:
    """(width, height) in pixels of the confusion-matrix picture of `classes` classes (the colour bar included)."""
    side = _side_pixels(classes)
    return side + 100, side


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Write the confusion matrix as a PNG: counts in the cells, true classes down, predicted across, by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(labels)
    width, height = confusion_plot_pixels(classes)
    fig, ax = plt.subplots(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    image = ax.imshow(confusion, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    peak = max(max(row) for row in confusion) or 1
    size = 10 if classes <= 8 else 7
    for row in range(classes):
        for column in range(classes):
            count = confusion[row][column]
            colour = "white" if count > peak / 2 else "black"
            ax.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=size)
    rotate = classes > 4 or max(len(name) for name in labels) > 8
    ax.set_xticks(range(classes), labels=labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(classes), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as temporary:
        fig.savefig(temporary, format="png", dpi=_DPI)
    plt.close(fig)
