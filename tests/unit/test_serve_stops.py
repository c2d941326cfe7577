"""Stop strings in served answers: cut exactly, even when a stop string spans streamed pieces."""

from __future__ import annotations

from collections.abc import Generator

from tuneforge.serve.engines.transformers_engine import _cut_at_stops


def _run(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    gen: Generator[str, None, bool] = _cut_at_stops(iter(pieces), stops)
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as end:
            return "".join(out), end.value


def test_without_stops_text_passes_through_and_is_read_to_the_end() -> None:
    assert _run(["Hel", "lo"], ()) == ("Hello", True)


def test_stop_spanning_two_pieces_is_cut_before_it() -> None:
    assert _run(["The end", "<|", "stop|> more"], ("<|stop|>",)) == ("The end", False)


def test_earliest_of_several_stops_wins() -> None:
    assert _run(["a, b. c"], (".", ",")) == ("a", False)


def test_text_held_back_for_a_possible_stop_is_released_at_the_end() -> None:
    assert _run(["abc", "<"], ("<stop>",)) == ("abc<", True)
