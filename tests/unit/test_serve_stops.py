"""Served answer text: stop strings cut exactly (even across pieces), characters come out whole."""

from __future__ import annotations

from collections.abc import Generator

from tuneforge.serve.text import Completion, TextStream, cut_at_stops


def _run(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    gen: Generator[str, None, bool] = cut_at_stops(iter(pieces), stops)
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


def _bytes(tokens: list[int]) -> str:
    return bytes(tokens).decode("utf-8", errors="replace")


def test_text_stream_holds_back_an_unfinished_character() -> None:
    pieces: list[str] = []
    stream = TextStream(_bytes, (), pieces.append)
    for token in "é!".encode():
        assert stream.add(token)
    assert pieces == ["é", "!"]
    assert stream.close(hit_eos=True) == Completion("é!", 3, "stop")


def test_text_stream_ends_at_a_stop_string_spanning_tokens() -> None:
    pieces: list[str] = []
    stream = TextStream(_bytes, ("<s>",), pieces.append)
    taken = [stream.add(token) for token in b"ab<s>c"]
    assert taken == [True, True, True, True, False, False]
    assert "".join(pieces) == "ab" and stream.close(hit_eos=False) == Completion("ab", 5, "stop")


def test_text_stream_out_of_tokens_is_a_length_finish() -> None:
    stream = TextStream(_bytes, ("zz",))
    for token in b"abz":
        stream.add(token)
    assert stream.close(hit_eos=False) == Completion("abz", 3, "length")


def test_empty_stop_strings_are_ignored_by_requests_and_the_cutter() -> None:
    from tuneforge.serve.protocol import CompletionRequest

    assert CompletionRequest(model="m", prompt="a", stop="").stops() == ()
    assert CompletionRequest(model="m", prompt="a", stop=["", "x"]).stops() == ("x",)
    assert _run(["ab", "c"], ("",)) == ("abc", True)
