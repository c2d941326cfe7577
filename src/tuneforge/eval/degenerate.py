"""Degenerate answers: a repetition loop ("我是Conch，我是Conch，我是Conch…" up to the token limit).

Greedy decoding that falls into a loop repeats the same characters until the answer is cut off, so a loop is a
stretch of text with a short period: every character equals the one a unit's length before it. Such an answer
is a failure whatever it contains, even when the loop holds the expected name or number.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["MIN_LOOP_CHARS", "Loop", "repetition_loop"]

MIN_LOOP_CHARS = 12  # shorter repeats ("ha ha ha", "!!!") are style, not a loop
_LONG_UNIT = 16  # a unit this long (a whole clause or sentence) repeated twice back to back is already a loop
_WINDOW = 4000  # only the end of a very long answer is searched (loops run to the end)
_MAX_UNIT = 400  # longer repeated units are not searched for


@dataclass(frozen=True)
class Loop:
    """The repeated unit, how many whole copies of it follow each other, and where the repetition starts (a
    character offset into the answer with its spacing collapsed)."""

    unit: str
    repeats: int
    start: int

    def describe(self) -> str:
        """'repetition loop: "我是Conch，" ×8'."""
        return f'repetition loop: "{self.unit.strip()}" ×{self.repeats}'


def _longest_periodic_run(text: str, period: int) -> tuple[int, int]:
    """(start, length) of the longest stretch of `text` with this period (length counts the first unit too)."""
    best_start, best_length, position = 0, 0, 0
    for same, group in itertools.groupby(a == b for a, b in zip(text, text[period:], strict=False)):
        size = sum(1 for _ in group)
        if same and size + period > best_length:
            best_start, best_length = position, size + period
        position += size
    return best_start, best_length


def _is_loop(unit: str, length: int, at_end: bool) -> bool:
    repeats = (length + 1) / len(unit)  # + 1: the last copy may lack its separator ("Conch. Conch. Conch.")
    if not (repeats >= 3 and length >= MIN_LOOP_CHARS) and not (repeats >= 2 and len(unit) >= _LONG_UNIT):
        return False
    # a unit without letters — symbols ("|---|---|" of a Markdown table) or digits (a float's representation,
    # 0.30000000000000004; a repeating decimal, 0.142857142857) — loops only when the answer ends in it
    return at_end or any(ch.isalpha() for ch in unit)


def repetition_loop(answer: str) -> Loop | None:
    """The shortest-period repetition loop in `answer`, or None.

    A loop is a stretch repeating a unit at least 3 times and 12 characters long, or a unit of 16 or more
    characters repeated at least twice. Spacing is collapsed first and a trailing replacement character (a
    multi-byte character cut by the token limit) is ignored.
    """
    text = " ".join(answer.split()).rstrip("\ufffd").rstrip()
    offset = max(0, len(text) - _WINDOW)
    text = text[offset:]
    for period in range(1, min((len(text) + 1) // 2, _MAX_UNIT) + 1):
        start, length = _longest_periodic_run(text, period)
        if length + 1 < 2 * period:
            continue
        unit = text[start : start + period]
        if _is_loop(unit, length, at_end=start + length == len(text)):
            return Loop(unit, (length + 1) // period if period > 1 else length, offset + start)
    return None
