"""Tool calls and tool results in an Ollama template, read off the text a conversation trains on.

A conversation with tool calls trains on the chat template's own rendering when the template handles tools, and on
tool calls written as text (``<tool_call>`` blocks, see ``tuneforge.data.render``) otherwise. Probe conversations
rendered that way show the text around each call's function name and arguments, between two calls, between the
content and the first call, and around a run of tool results; ``tool_template`` turns those pieces into the Go
template branches that print Ollama's ``.ToolCalls`` and ``tool`` messages the same way.

Ollama gives a template a call's arguments as a Go map, so they print with their keys in sorted order; string
values go through Go's JSON encoder, which writes ``<``, ``>`` and ``&`` as ``\\u003c``-style escapes. A call
renders exactly as in training when its argument keys are in sorted order and its values are numbers, booleans or
strings without those three characters. Tool definitions (Ollama's ``.Tools``) are not part of the template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import conversation_text
from tuneforge.data.tool_calls import PROBE_CALLS, call_text, split_call
from tuneforge.errors import UserError

__all__ = ["ResultsTemplate", "ToolWrappers", "read_tool_wrappers", "tool_calls_template", "tool_results_template"]

_USER, _CONTENT, _RESULTS = "USERQZXW", "CONTENTQZXW", ("RESULTONEQZXW", "RESULTTWOQZXW")

# Arguments printed as Python's json.dumps writes a dict ({"a": 1, "b": 2}), keys in Go's (sorted) map order.
_SPACED_ARGUMENTS = (
    '{{ "{" }}{{ $sep := "" }}{{ range $key, $value := .Function.Arguments }}'
    '{{ $sep }}{{ json $key }}: {{ json $value }}{{ $sep = ", " }}{{ end }}}'
)


@dataclass(frozen=True)
class ToolWrappers:
    """The text around tool calls and tool results; a run of results is open + (prefix result suffix)... + close."""

    call_prefix: str
    call_infix: str  # between the function name and the arguments
    call_suffix: str
    quoted_name: bool  # the name is written as a JSON string
    spaced_arguments: bool  # the arguments are written as json.dumps does ({"a": 1}), else compact ({"a":1})
    call_separator: str
    content_separator: str  # between the message content and its first call
    result_open: str
    result_prefix: str
    result_suffix: str
    result_close: str


def _between(text: str, start: str, end: str, what: str) -> str:
    if not text.startswith(start) or not text.endswith(end) or len(text) < len(start) + len(end):
        raise UserError(f"the {what} is not consistent across probe conversations")
    return text[len(start) : len(text) - len(end)]


def read_tool_wrappers(tokenizer: Any, assistant_prefix: str, assistant_suffix: str) -> ToolWrappers:
    """Read the tool-call and tool-result text of the training rendering; UserError when it has no fixed form."""

    def render(messages: list[Message], generation: bool = False) -> str:
        return conversation_text(tokenizer, Conversation(messages=messages), generation)

    user = Message("user", _USER)
    head = render([user], generation=True)

    def calls_text(content: str, calls: tuple[dict[str, Any], ...]) -> str:
        turn = render([user, Message("assistant", content, tool_calls=[dict(c) for c in calls])])
        return _between(turn, head, assistant_suffix, "assistant turn with tool calls")

    one = calls_text("", PROBE_CALLS[:1])
    try:
        pieces = split_call(one, PROBE_CALLS[0])
    except ValueError as err:
        raise UserError(str(err)) from None

    def call(index: int) -> str:
        return call_text(PROBE_CALLS[index], pieces)

    separator = _between(calls_text("", PROBE_CALLS), call(0), call(1), "text between two tool calls")
    content_separator = _between(calls_text(_CONTENT, PROBE_CALLS[:1]), _CONTENT, call(0), "text before a tool call")
    if calls_text(_CONTENT, PROBE_CALLS) != _CONTENT + content_separator + call(0) + separator + call(1):
        raise UserError("the text of several tool calls does not follow from that of one")
    return ToolWrappers(
        pieces.prefix, pieces.infix, pieces.suffix, pieces.quoted_name, pieces.spaced_arguments, separator, content_separator,
        *_result_wrappers(render, user, assistant_prefix),
    )  # fmt: skip


def _result_wrappers(render: Callable[..., str], user: Message, assistant_prefix: str) -> tuple[str, str, str, str]:
    """(open, prefix, suffix, close) of a run of tool results."""
    one_call = [user, Message("assistant", "", tool_calls=[dict(PROBE_CALLS[0])])]
    two_calls = [user, Message("assistant", "", tool_calls=[dict(c) for c in PROBE_CALLS])]
    results = [Message("tool", text) for text in _RESULTS]
    one = _between(render(one_call + results[:1], True), render(one_call), assistant_prefix, "tool result turn")
    two = _between(render(two_calls + results, True), render(two_calls), assistant_prefix, "tool result turns")
    before, after = one.split(_RESULTS[0]) if one.count(_RESULTS[0]) == 1 else ("", None)
    if after is None or not two.startswith(before + _RESULTS[0]) or not two.endswith(_RESULTS[1] + after):
        raise UserError("the text around tool results is not consistent across probe conversations")
    between = two[len(before + _RESULTS[0]) : len(two) - len(_RESULTS[1] + after)]
    for cut in range(len(before) + 1):  # the longest item prefix first: no open text unless results are grouped
        item_prefix = before[cut:]
        if between.endswith(item_prefix) and after.startswith(between[: len(between) - len(item_prefix)]):
            item_suffix = between[: len(between) - len(item_prefix)]
            return before[:cut], item_prefix, item_suffix, after[len(item_suffix) :]
    raise UserError("two tool results do not render as a run of one")


def tool_calls_template(t: ToolWrappers, text: Callable[[str], str]) -> str:
    """The Go template printing a message's ``.ToolCalls`` (after its content); `text` writes template text."""
    name = "{{ json .Function.Name }}" if t.quoted_name else "{{ .Function.Name }}"
    arguments = _SPACED_ARGUMENTS if t.spaced_arguments else "{{ .Function.Arguments }}"
    call = f"{text(t.call_prefix)}{name}{text(t.call_infix)}{arguments}{text(t.call_suffix)}"
    return (
        "{{ $content := .Content }}{{ range $index, $call := .ToolCalls }}"
        f"{{{{ if $index }}}}{text(t.call_separator)}"
        f"{{{{ else if $content }}}}{text(t.content_separator)}{{{{ end }}}}"
        f"{call}{{{{ end }}}}"
    )


@dataclass(frozen=True)
class ResultsTemplate:
    """The Go template pieces printing `tool` messages, placed around and inside the range over .Messages.

    A run of results that the chat template groups (one open and one close text around all of them) needs the
    role of the previous message, kept in `$previous`; the close text is printed when a run ends.
    """

    declare: str = ""  # before the range
    turn_start: str = ""  # first in each iteration
    branch: str = ""  # the `else if eq .Role "tool"` branch
    turn_end: str = ""  # last in each iteration
    after: str = ""  # after the range


def tool_results_template(t: ToolWrappers, text: Callable[[str], str]) -> ResultsTemplate:
    """The pieces printing `tool` messages as the training text has them; `text` writes template text."""
    result = f"{text(t.result_prefix)}{{{{ .Content }}}}{text(t.result_suffix)}"
    if not (t.result_open or t.result_close):
        return ResultsTemplate(branch=f'{{{{ else if eq .Role "tool" }}}}{result}')
    close = f'{{{{ if eq $previous "tool" }}}}{text(t.result_close)}{{{{ end }}}}'
    return ResultsTemplate(
        declare='{{ $previous := "" }}',
        turn_start=f'{{{{ if ne .Role "tool" }}}}{close}{{{{ end }}}}',
        branch=f'{{{{ else if eq .Role "tool" }}}}{{{{ if ne $previous "tool" }}}}{text(t.result_open)}{{{{ end }}}}'
        + result,
        turn_end="{{ $previous = .Role }}",
        after=close,
    )
