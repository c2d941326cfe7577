"""Counts every dropped or truncated row by reason, with file:line examples. Nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DataReport"]


@dataclass
class DataReport:
    """The fate of every row read: kept (possibly truncated) or dropped for a reason."""

    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    per_dataset: Counter[str] = field(default_factory=Counter)

    def drop(self, source: str, reason: str, detail: str) -> None:
        """Record a dropped row."""
        self.dropped[reason] += 1
        self.problems.append(f"{source}: {reason}: {detail}")

    def truncate(self, source: str, detail: str) -> None:
        """Record a row that was kept but cut to the cutoff length."""
        self.truncated += 1
        self.problems.append(f"{source}: truncated: {detail}")

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        """One line: 'kept 52 of 53 rows (1 truncated); dropped 1: empty answer 1'."""
        text = f"kept {self.kept} of {self.total} rows"
        if self.truncated:
            text += f" ({self.truncated} truncated)"
        if self.dropped:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.dropped.most_common())
            text += f"; dropped {self.dropped_total}: {reasons}"
        return text
