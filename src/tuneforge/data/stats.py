"""What a dataset looks like to the model: length histogram against the cutoff, supervised share, roles, mix.

Also the sample view of `tuneforge data inspect`: rendered text with the supervised (loss-carrying) tokens marked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.messages import Conversation
from tuneforge.data.render import IGNORE_INDEX, RenderedSample

__all__ = ["DataStats", "compute_stats", "plot_histogram", "supervised_runs", "text_histogram"]


@dataclass
class DataStats:
    """Numbers `tuneforge data stats` prints."""

    lengths: list[int]
    cutoff_len: int
    supervised_tokens: int
    total_tokens: int
    truncated: int
    roles: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    per_dataset: Counter[str] = field(default_factory=Counter)

    @property
    def supervised_share(self) -> float:
        return self.supervised_tokens / self.total_tokens if self.total_tokens else 0.0

    def percentile(self, share: float) -> int:
        """The length below which `share` of the samples fall (nearest rank)."""
        ordered = sorted(self.lengths)
        return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] if ordered else 0


def compute_stats(samples: list[RenderedSample], conversations: list[Conversation], cutoff_len: int) -> DataStats:
    """Token and role statistics of rendered `samples` (and the conversations they came from)."""
    roles: Counter[str] = Counter()
    for conversation in conversations:
        roles.update(m.role for m in conversation.messages)
        roles.update(m.role for m in (conversation.chosen, conversation.rejected) if m is not None)
        if conversation.text is not None:
            roles["text"] += 1
    return DataStats(
        lengths=[len(s.input_ids) for s in samples],
        cutoff_len=cutoff_len,
        supervised_tokens=sum(s.supervised_tokens for s in samples),
        total_tokens=sum(len(s.input_ids) for s in samples),
        truncated=sum(1 for s in samples if s.truncated),
        roles=roles,
        kinds=Counter(s.kind for s in samples),
        per_dataset=Counter(s.dataset for s in samples),
    )


def text_histogram(stats: DataStats, width: int = 40, bins: int = 10) -> list[str]:
    """One line per length bin below the cutoff, then one for samples at the cutoff (truncated or exactly full)."""
    step = max(1, -(-stats.cutoff_len // bins))
    rows = [
        (f"{lo}-{min(lo + step, stats.cutoff_len) - 1}", lo, min(lo + step, stats.cutoff_len))
        for lo in range(0, stats.cutoff_len, step)
    ]
    counts = [sum(1 for n in stats.lengths if lo <= n < hi) for _, lo, hi in rows]
    labels = [label for label, _, _ in rows] + [f"= cutoff {stats.cutoff_len}"]
    counts.append(sum(1 for n in stats.lengths if n >= stats.cutoff_len))
    top = max(counts) or 1
    pad = max(len(label) for label in labels)
    return [
        f"{label:>{pad}} {count:>7} {'#' * round(width * count / top)}"
        for label, count in zip(labels, counts, strict=True)
    ]


def plot_histogram(stats: DataStats, path: Path, title: str) -> Path:
    """A PNG histogram of sample lengths with the cutoff drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(stats.lengths, bins=min(50, max(5, len(set(stats.lengths)))), color="#4878a8")
    axis.axvline(stats.cutoff_len, color="#c0392b", linestyle="--", label=f"cutoff_len {stats.cutoff_len}")
    axis.set_xlabel("tokens per sample")
    axis.set_ylabel("samples")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def supervised_runs(tokenizer: Any, sample: RenderedSample) -> list[tuple[str, bool]]:
    """The sample's text cut into runs of (text, supervised) — what the loss mask looks like."""
    runs: list[tuple[list[int], bool]] = []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        flag = label != IGNORE_INDEX
        if runs and runs[-1][1] == flag:
            runs[-1][0].append(token)
        else:
            runs.append(([token], flag))
    return [(tokenizer.decode(ids), flag) for ids, flag in runs]
