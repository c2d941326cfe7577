"""Counts every row's fate — kept, truncated or dropped for a reason — with file:line for each problem row.

The invariant every report keeps: kept + truncated + dropped = total. Nothing is dropped without being counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.messages import Conversation

__all__ = ["DataReport", "DuplicateFinder", "Problem", "normalise_text"]

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Problem:
    """One problem row: where it is, the short reason (used for counts) and the details."""

    where: str
    reason: str
    detail: str
    dropped: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {self.detail}"


@dataclass
class DataReport:
    """The fate of every row read, per reason and per dataset."""

    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    issues: list[Problem] = field(default_factory=list)
    per_dataset: Counter[str] = field(default_factory=Counter)
    read_per_dataset: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    mixed: dict[str, int] = field(default_factory=dict)

    def drop(self, source: str, reason: str, detail: str) -> None:
        """Record a dropped row."""
        self.dropped[reason] += 1
        self.issues.append(Problem(source, reason, detail))

    def flag(self, source: str, reason: str, detail: str) -> None:
        """Record a row that is kept but looks wrong (e.g. a near-duplicate when dedup is exact only)."""
        self.flagged[reason] += 1
        self.issues.append(Problem(source, reason, detail, dropped=False))

    def truncate(self, source: str, detail: str) -> None:
        """Record a row that was kept but cut to the cutoff length."""
        self.truncated += 1
        self.issues.append(Problem(source, "over the cutoff length", detail, dropped=False))

    def unkeep(self, sample: Any, reason: str, detail: str) -> None:
        """Move an already kept sample to the dropped rows (e.g. one a mix ratio leaves out)."""
        if sample.truncated:
            self.truncated -= 1
        else:
            self.kept -= 1
        self.per_dataset[sample.dataset] -= 1
        self.drop(sample.source, reason, detail)

    def keep(self, dataset: str, truncated: bool) -> None:
        """Record a row that made it into the data (truncated rows are counted apart from kept)."""
        if not truncated:
            self.kept += 1
        self.per_dataset[dataset] += 1

    @property
    def problems(self) -> list[str]:
        """Every problem as one printable line."""
        return [str(p) for p in self.issues]

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """kept + truncated + dropped = total."""
        return self.kept + self.truncated + self.dropped_total == self.total

    @property
    def drop_ratio(self) -> float:
        return self.dropped_total / self.total if self.total else 0.0

    def merge_drops(self, other: DataReport) -> None:
        """Add another report's dropped rows (e.g. self-replay prompts without a usable answer)."""
        self.total += other.dropped_total
        self.dropped.update(other.dropped)
        self.issues += [p for p in other.issues if p.dropped]

    def full_text(self) -> str:
        """The summary, notes and every problem row, one per line (written as data_report.txt)."""
        lines = [self.summary(), *self.notes]
        lines += [f"{name}: {count} rows used" for name, count in sorted(self.per_dataset.items())]
        lines += self.problems
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One line: 'kept 50 + truncated 1 + dropped 2 = 53 rows (dropped: empty answer 1, ...)'."""
        text = f"kept {self.kept} + truncated {self.truncated} + dropped {self.dropped_total} = {self.total} rows"
        if self.dropped:
            text += " (dropped: " + ", ".join(f"{r} {c}" for r, c in self.dropped.most_common()) + ")"
        if self.flagged:
            text += "; flagged: " + ", ".join(f"{r} {c}" for r, c in self.flagged.most_common())
        return text


def normalise_text(text: str) -> str:
    """Lower case, punctuation and runs of spaces collapsed: rows equal after this are near-duplicates."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


class DuplicateFinder:
    """Finds exact and near-duplicate rows across every dataset of a run (first occurrence wins)."""

    def __init__(self) -> None:
        self._exact: dict[str, str] = {}
        self._normalised: dict[str, str] = {}

    def check(self, conversation: Conversation) -> tuple[str, str] | None:
        """(reason, location of the earlier copy) when `conversation` repeats an earlier row, else None."""
        key = conversation.content_key()
        if key in self._exact:
            return "exact duplicate", self._exact[key]
        normal = normalise_text(key)
        self._exact[key] = conversation.source
        if normal in self._normalised:
            return "near-duplicate", self._normalised[normal]
        self._normalised[normal] = conversation.source
        return None
