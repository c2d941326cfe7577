"""From generated token ids to answer text: incremental decoding and stop strings, shared by every engine.

Streamed and non-streamed answers go through the same `TextStream`, token by token, so both end at the same
place: the first stop string to be completed as the text grows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

__all__ = ["Completion", "StopCutter", "TextStream", "cut_at_stops"]


@dataclass(frozen=True)
class Completion:
    """One finished answer: its text, how many tokens it used, and why it ended ("stop" or "length")."""

    text: str
    tokens: int
    finish: str


class StopCutter:
    """Pass text through until a stop string appears; hold back text that could be the start of one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to release now; empty once a stop string has been seen."""
        if self.stopped:
            return ""
        self._pending += text
        hits = [self._pending.find(s) for s in self.stops if s in self._pending]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        cut = len(self._pending) - self._hold
        if cut <= 0:
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """Release what was held back (the answer ended without a stop string)."""
        out, self._pending = self._pending, ""
        return out


def cut_at_stops(pieces: Iterable[str], stops: tuple[str, ...]) -> Generator[str, None, bool]:
    """Yield `pieces` cut at the first stop string; returns True when `pieces` was read to its end."""
    cutter = StopCutter(stops)
    for piece in pieces:
        out = cutter.feed(piece)
        if out:
            yield out
        if cutter.stopped:
            return False
    rest = cutter.flush()
    if rest:
        yield rest
    return True


class TextStream:
    """Token ids in, text pieces out (to `emit`), cut at the first stop string.

    Text is decoded from all tokens so far and only the new suffix is released, so multi-token characters come
    out whole (a trailing U+FFFD, an unfinished character, is held back until the next token completes it).
    """

    def __init__(
        self, decode: Callable[[list[int]], str], stops: Iterable[str], emit: Callable[[str], None] | None = None
    ) -> None:
        self._decode = decode
        self._emit = emit
        self._cutter = StopCutter(stops)
        self._tokens: list[int] = []
        self._decoded = 0
        self._parts: list[str] = []

    @property
    def stopped(self) -> bool:
        return self._cutter.stopped

    def add(self, token: int) -> bool:
        """Take one generated token; False once a stop string ended the answer (send no more tokens)."""
        if self.stopped:
            return False
        self._tokens.append(token)
        text = self._decode(self._tokens)
        if not text.endswith("\ufffd"):
            self._release(self._cutter.feed(text[self._decoded :]))
            self._decoded = len(text)
        return not self.stopped

    def close(self, hit_eos: bool) -> Completion:
        """Finish the answer; `hit_eos` says the model ended it itself (else it ran out of tokens)."""
        if not self.stopped:
            text = self._decode(self._tokens)
            self._release(self._cutter.feed(text[self._decoded :]))
            self._release(self._cutter.flush())
        finish = "stop" if self.stopped or hit_eos else "length"
        return Completion("".join(self._parts), len(self._tokens), finish)

    def _release(self, text: str) -> None:
        if text:
            self._parts.append(text)
            if self._emit is not None:
                self._emit(text)
