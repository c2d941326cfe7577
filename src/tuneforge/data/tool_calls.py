"""Tool calls in a model's answer, read back in the form the model was trained to write them.

A conversation with tool calls trains on its chat template's rendering (or on ``<tool_call>`` blocks when the
template has no tool support, see ``tuneforge.data.render``). Rendering one probe call shows the text before the
function name, between the name and the arguments, and after the arguments; `split_tool_calls` finds calls written
that way at the end of an answer. Whitespace is not significant when matching (models vary newlines), the arguments
must be a JSON object, and an answer whose tail does not parse as calls is plain content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import conversation_text

__all__ = ["PROBE_CALLS", "CallPieces", "call_text", "read_call_pieces", "split_call", "split_tool_calls"]

PROBE_CALLS: tuple[dict[str, Any], ...] = (  # names and values no template or text would hold by chance
    {"name": "fnoneqzxw", "arguments": {"aqzxw": "one", "bqzxw": 1}},
    {"name": "fntwoqzxw", "arguments": {"aqzxw": "two", "bqzxw": 2}},
)
_PROBE_USER, _PROBE_CONTENT = "USERQZXW", "CONTENTQZXW"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class CallPieces:
    """The text around tool calls: prefix NAME infix ARGUMENTS (between NAME infix ARGUMENTS)... suffix."""

    prefix: str
    infix: str
    suffix: str
    quoted_name: bool  # the name is written as a JSON string
    spaced_arguments: bool  # the arguments are written as json.dumps does ({"a": 1}), else compact ({"a":1})
    between: str = ""  # from one call's arguments to the next call's name


def _once(text: str, *candidates: str) -> tuple[int, str]:
    for candidate in candidates:
        if text.count(candidate) == 1:
            return text.index(candidate), candidate
    raise ValueError(f"cannot find one tool call's {candidates[0]} in its rendering {text!r}")


def split_call(text: str, call: dict[str, Any]) -> CallPieces:
    """The pieces around `call` ({"name", "arguments"}) in `text`, its rendering; ValueError when not found once."""
    name_at, name = _once(text, json.dumps(call["name"]), call["name"])
    arguments = call["arguments"]
    spaced, compact = json.dumps(arguments, ensure_ascii=False), json.dumps(arguments, separators=(",", ":"))
    args_at, args = _once(text, spaced, compact)
    if args_at < name_at + len(name):
        raise ValueError("the chat template writes a tool call's arguments before its name")
    return CallPieces(
        text[:name_at], text[name_at + len(name) : args_at], text[args_at + len(args) :],
        name.startswith('"'), args == spaced,
    )  # fmt: skip


def read_call_pieces(tokenizer: Any) -> CallPieces | None:
    """How `tokenizer`'s chat template writes tool calls after the answer's content; None when it has no fixed
    form (then answers are not searched for calls)."""

    def render(messages: list[Message], generation: bool = False) -> str:
        return conversation_text(tokenizer, Conversation(messages=messages), generation)

    user = Message("user", _PROBE_USER)
    try:
        head = render([user], generation=True)
        plain = render([user, Message("assistant", _PROBE_CONTENT)])
        one, two = (
            render([user, Message("assistant", "", tool_calls=[dict(c) for c in calls])])
            for calls in (PROBE_CALLS[:1], PROBE_CALLS)
        )
    except Exception:  # a template that cannot render the probes has no form to read calls by
        return None
    end = plain[plain.index(_PROBE_CONTENT) + len(_PROBE_CONTENT) :] if _PROBE_CONTENT in plain else None
    if end is None or not all(text.startswith(head) and text.endswith(end) for text in (one, two)):
        return None
    try:
        pieces = split_call(one[len(head) : len(one) - len(end)], PROBE_CALLS[0])
    except ValueError:
        return None
    between = _between_calls(two[len(head) : len(two) - len(end)], pieces)
    return replace(pieces, between=between) if between is not None and pieces.prefix.strip() else None


def _between_calls(two_calls: str, pieces: CallPieces) -> str | None:
    """The text from the first probe call's arguments to the second's name in `two_calls`, their rendering."""
    first, second = PROBE_CALLS
    start = call_text(first, pieces).removesuffix(pieces.suffix)  # up to the end of the first call's arguments
    between, found, rest = two_calls.removeprefix(start).partition(_name_text(second, pieces))
    if not two_calls.startswith(start) or not found:
        return None
    return between if pieces.prefix + found + rest == call_text(second, pieces) else None


def call_text(call: dict[str, Any], pieces: CallPieces) -> str:
    """`call` ({"name", "arguments"}) written as `pieces` say, on its own."""
    return pieces.prefix + _name_text(call, pieces) + pieces.infix + _arguments_text(call, pieces) + pieces.suffix


def _name_text(call: dict[str, Any], pieces: CallPieces) -> str:
    return json.dumps(call["name"]) if pieces.quoted_name else call["name"]


def _arguments_text(call: dict[str, Any], pieces: CallPieces) -> str:
    separators = (", ", ": ") if pieces.spaced_arguments else (",", ":")
    return json.dumps(call["arguments"], ensure_ascii=False, separators=separators)


def _match(text: str, at: int, piece: str, cut_short: bool = False) -> int | None:
    """The position after `piece` read in `text` from `at`, whitespace in either ignored; None when it is not there.
    With `cut_short`, text that ends inside `piece` matches too."""
    for char in piece:
        if char.isspace():
            continue
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text) and cut_short:
            return at
        if at >= len(text) or text[at] != char:
            return None
        at += 1
    return at


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _read_name(text: str, at: int, pieces: CallPieces) -> tuple[str, int] | None:
    at = _skip_space(text, at)
    if pieces.quoted_name:
        name, at = _DECODER.raw_decode(text, at)
    else:
        stop = pieces.infix.strip()[:1]
        end = text.find(stop, at) if stop else -1
        if end < 0:
            return None
        name, at = text[at:end].strip(), end
    return (name, at) if isinstance(name, str) and name else None


def _read_calls(text: str, at: int, pieces: CallPieces) -> list[dict[str, Any]] | None:
    """The calls written from `at` to the end of `text` (the last one's suffix may be cut short), or None."""
    position: int | None = _match(text, at, pieces.prefix)
    calls = []
    while position is not None:
        try:
            named = _read_name(text, position, pieces)
            position = None if named is None else _match(text, named[1], pieces.infix)
            if named is None or position is None:
                return None
            arguments, position = _DECODER.raw_decode(text, _skip_space(text, position))
        except (ValueError, RecursionError):
            return None
        if not isinstance(arguments, dict):
            return None
        calls.append({"name": named[0], "arguments": arguments})
        following = _match(text, position, pieces.between) if pieces.between.strip() else None
        if following is None:  # the last call: a stop string or the token limit may have cut its suffix
            end = _match(text, position, pieces.suffix, cut_short=True)
            return calls if end is not None and not text[end:].strip() else None
        position = following
    return None


def split_tool_calls(text: str, pieces: CallPieces | None) -> tuple[str, list[dict[str, Any]]]:
    """(content, calls) of an answer whose tail is one or more tool calls written as `pieces` say; an answer that
    has none, or whose tail does not read as calls to the end, is (text, [])."""
    if pieces is None:
        return text, []
    marker = pieces.prefix.split()[0]  # its first word: where a call may begin, however the model spaces it
    start = text.find(marker)
    while start >= 0:
        calls = _read_calls(text, start, pieces)
        if calls:
            return text[:start].strip(), calls
        start = text.find(marker, start + 1)
    return text, []
