"""One bad row is one counted, located drop: every format, every field, every wrong type — never a crash.

Each case writes a file of three rows (good, bad, good) and expects exactly the bad row in the report, at its line,
with its reason and a detail naming the field, and the two good rows kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_models import write_jsonl
from tuneforge.data import Conversation, DataReport, Message, load_conversations, prepare_samples
from tuneforge.data import pipeline as pipeline_module
from tuneforge.data.files import read_rows
from tuneforge.data.formats import FORMATS
from tuneforge.errors import UserError

ALPACA = {"instruction": "What is 2 + 2?", "output": "4."}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
OPENAI = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
TOOL = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def good(kind: str, number: int) -> dict[str, Any]:
    """A valid row of `kind`, made distinct by `number` (so no row is a duplicate of another)."""
    rows = {
        "alpaca": {"instruction": f"What is {number} + 2?", "output": f"{number + 2}."},
        "sharegpt": {"conversations": [{"from": "human", "value": f"Hi {number}"}, {"from": "gpt", "value": "Hi!"}]},
        "openai": {
            "messages": [{"role": "user", "content": f"Hi {number}"}, {"role": "assistant", "content": "Hello!"}]
        },
        "pair": {"prompt": f"Sky {number}?", "chosen": "Blue.", "rejected": "Green."},
        "kto": {"prompt": f"{number} + 2?", "completion": f"{number + 2}", "label": number % 2 == 1},
        "text": {"text": f"Water boils at {number}00 degrees in an odd unit."},
    }
    return rows[kind]


def openai_with(**assistant: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", **assistant}]}


def sharegpt_with(*turns: dict[str, Any], **row: Any) -> dict[str, Any]:
    return {"conversations": [{"from": "human", "value": "Weather?"}, *turns], **row}


def call(function: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": function}


def must(where: str, expected: str, got: str) -> tuple[str, str]:
    return "malformed field", f"{where} must be {expected}, got {got}"


CASES: list[tuple[str, str, dict[str, Any], tuple[str, str]]] = [
    # alpaca
    (
        "alpaca",
        "instruction-number",
        {"instruction": 5, "output": "a"},
        must("field 'instruction'", "a string", "a number"),
    ),
    (
        "alpaca",
        "instruction-list",
        {"instruction": ["q"], "output": "a"},
        must("field 'instruction'", "a string", "a list"),
    ),
    (
        "alpaca",
        "instruction-null",
        {"instruction": None, "output": "a"},
        ("missing field", "missing field 'instruction'"),
    ),
    (
        "alpaca",
        "input-number",
        {"instruction": "q", "input": 0, "output": "a"},
        must("field 'input'", "a string", "a number"),
    ),
    (
        "alpaca",
        "input-object",
        {"instruction": "q", "input": {"a": 1}, "output": "a"},
        must("field 'input'", "a string", "an object"),
    ),
    (
        "alpaca",
        "output-object",
        {"instruction": "q", "output": {"text": "a"}},
        must("field 'output'", "a string", "an object"),
    ),
    ("alpaca", "output-bool", {"instruction": "q", "output": True}, must("field 'output'", "a string", "true/false")),
    ("alpaca", "output-missing", {"instruction": "q"}, ("missing field", "missing field 'output'")),
    (
        "alpaca",
        "system-number",
        {"instruction": "q", "output": "a", "system": 5},
        must("field 'system'", "a string", "a number"),
    ),
    (
        "alpaca",
        "history-number",
        {"instruction": "q", "output": "a", "history": 5},
        must("field 'history'", "a list of [user, assistant] pairs", "a number"),
    ),
    (
        "alpaca",
        "history-string",
        {"instruction": "q", "output": "a", "history": "q1 a1"},
        must("field 'history'", "a list of [user, assistant] pairs", "a string"),
    ),
    (
        "alpaca",
        "history-short-pair",
        {"instruction": "q", "output": "a", "history": [["q1"]]},
        ("malformed field", "history[0] must be a [user, assistant] pair of strings"),
    ),
    (
        "alpaca",
        "history-nested-number",
        {"instruction": "q", "output": "a", "history": [["q1", 5]]},
        ("malformed field", "history[0] must be a [user, assistant] pair of strings"),
    ),
    (
        "alpaca",
        "tools-number",
        {"instruction": "q", "output": "a", "tools": 5},
        must("field 'tools'", "a list of tool definitions", "a number"),
    ),
    (
        "alpaca",
        "tools-not-json",
        {"instruction": "q", "output": "a", "tools": "[{"},
        ("malformed field", "field 'tools' is not valid JSON (Expecting property name enclosed in double quotes)"),
    ),
    (
        "alpaca",
        "tools-json-object",
        {"instruction": "q", "output": "a", "tools": '{"name": "x"}'},
        must("field 'tools'", "a list of tool definitions", "an object"),
    ),
    (
        "alpaca",
        "tools-item-number",
        {"instruction": "q", "output": "a", "tools": [5]},
        ("malformed field", "tools[0] must be a tool definition with a function name"),
    ),
    (
        "alpaca",
        "tools-item-no-name",
        {"instruction": "q", "output": "a", "tools": [{"description": "x"}]},
        ("malformed field", "tools[0] must be a tool definition with a function name"),
    ),
    (
        "alpaca",
        "tools-function-not-object",
        {"instruction": "q", "output": "a", "tools": [{"type": "function", "function": 5}]},
        ("malformed field", "tools[0] must be a tool definition with a function name"),
    ),
    (
        "alpaca",
        "chosen-number",
        {"instruction": "q", "chosen": 5, "rejected": "r"},
        must("field 'chosen'", "a string", "a number"),
    ),
    (
        "alpaca",
        "label-word",
        {"instruction": "q", "output": "a", "label": "maybe"},
        ("malformed field", "KTO label must be true or false, got 'maybe'"),
    ),
    ("alpaca", "empty-answer", {"instruction": "q", "output": ""}, ("empty answer", "message 2 (assistant) is empty")),
    ("alpaca", "empty-prompt", {"instruction": " ", "output": "a"}, ("empty prompt", "message 1 (user) is empty")),
    # sharegpt
    (
        "sharegpt",
        "conversations-number",
        {"conversations": 5},
        must("field 'conversations'", "a list of turns", "a number"),
    ),
    (
        "sharegpt",
        "conversations-string",
        {"conversations": "hi"},
        must("field 'conversations'", "a list of turns", "a string"),
    ),
    ("sharegpt", "conversations-null", {"conversations": None}, ("missing field", "missing field 'conversations'")),
    ("sharegpt", "conversations-empty", {"conversations": []}, ("empty conversation", "no user/assistant messages")),
    (
        "sharegpt",
        "turn-number",
        {"conversations": [5]},
        ("malformed field", "conversations[0] needs 'from' and 'value'"),
    ),
    (
        "sharegpt",
        "turn-without-value",
        sharegpt_with({"from": "gpt"}),
        ("malformed field", "conversations[1] needs 'from' and 'value'"),
    ),
    (
        "sharegpt",
        "from-number",
        sharegpt_with({"from": 1, "value": "a"}),
        must("conversations[1].from", "a string", "a number"),
    ),
    (
        "sharegpt",
        "from-unknown",
        sharegpt_with({"from": "robot", "value": "a"}),
        ("unsupported role", "conversations[1] has role 'robot'"),
    ),
    (
        "sharegpt",
        "value-number",
        sharegpt_with({"from": "gpt", "value": 5}),
        must("conversations[1].value", "a string", "a number"),
    ),
    (
        "sharegpt",
        "value-list",
        sharegpt_with({"from": "gpt", "value": ["a"]}),
        must("conversations[1].value", "a string", "a list"),
    ),
    (
        "sharegpt",
        "value-null",
        sharegpt_with({"from": "gpt", "value": None}),
        must("conversations[1].value", "a string", "null"),
    ),
    (
        "sharegpt",
        "weight-word",
        sharegpt_with({"from": "gpt", "value": "a", "weight": "x"}),
        ("malformed field", "conversations[1].weight must be 0 or 1"),
    ),
    (
        "sharegpt",
        "system-list",
        sharegpt_with({"from": "gpt", "value": "a"}, system=["s"]),
        must("field 'system'", "a string", "a list"),
    ),
    (
        "sharegpt",
        "tools-object",
        sharegpt_with({"from": "gpt", "value": "a"}, tools={"name": "x"}),
        must("field 'tools'", "a list of tool definitions", "an object"),
    ),
    (
        "sharegpt",
        "function-call-not-json",
        sharegpt_with({"from": "function_call", "value": "get_weather(Paris)"}),
        ("malformed field", "conversations[1] (function_call) is not valid JSON"),
    ),
    (
        "sharegpt",
        "function-call-no-name",
        sharegpt_with({"from": "function_call", "value": '{"arguments": {}}'}),
        ("malformed field", "conversations[1] (function_call) needs a function name (a string), got null"),
    ),
    (
        "sharegpt",
        "function-call-name-number",
        sharegpt_with({"from": "function_call", "value": '{"name": 5}'}),
        ("malformed field", "conversations[1] (function_call) needs a function name (a string), got a number"),
    ),
    (
        "sharegpt",
        "function-call-arguments-list",
        sharegpt_with({"from": "function_call", "value": '{"name": "f", "arguments": [1]}'}),
        must("conversations[1] (function_call) tool call arguments", "a JSON object", "a list"),
    ),
    (
        "sharegpt",
        "function-call-empty",
        sharegpt_with({"from": "function_call", "value": "[]"}),
        ("malformed field", "conversations[1] (function_call) holds no call"),
    ),
    (
        "sharegpt",
        "function-call-number",
        sharegpt_with({"from": "function_call", "value": "5"}),
        must("conversations[1] (function_call)", "a call object or a list of them", "a number"),
    ),
    (
        "sharegpt",
        "observation-object",
        sharegpt_with({"from": "function_call", "value": '{"name": "f"}'}, {"from": "observation", "value": {"t": 1}}),
        must("conversations[2].value", "a string", "an object"),
    ),
    (
        "sharegpt",
        "chosen-string",
        {**sharegpt_with(), "chosen": "Paris.", "rejected": {"from": "gpt", "value": "r"}},
        ("malformed field", "chosen needs 'from' and 'value'"),
    ),
    (
        "sharegpt",
        "label-list",
        {**SHAREGPT, "label": [True]},
        ("malformed field", "KTO label must be true or false, got [True]"),
    ),
    # openai
    ("openai", "messages-number", {"messages": 5}, must("field 'messages'", "a list of messages", "a number")),
    ("openai", "messages-string", {"messages": "hi"}, must("field 'messages'", "a list of messages", "a string")),
    ("openai", "messages-null", {"messages": None}, ("missing field", "missing field 'messages'")),
    ("openai", "message-number", {"messages": [5]}, ("malformed field", "messages[0] needs 'role' and 'content'")),
    (
        "openai",
        "message-without-role",
        {"messages": [{"content": "hi"}]},
        ("malformed field", "messages[0] needs 'role' and 'content'"),
    ),
    (
        "openai",
        "role-number",
        {"messages": [{"role": 1, "content": "hi"}]},
        must("messages[0].role", "a string", "a number"),
    ),
    (
        "openai",
        "role-unknown",
        {"messages": [{"role": "bot", "content": "hi"}]},
        ("unsupported role", "messages[0] has role 'bot'"),
    ),
    (
        "openai",
        "content-number",
        openai_with(content=5),
        must("messages[1].content", "a string or a list of text parts", "a number"),
    ),
    (
        "openai",
        "content-object",
        openai_with(content={"text": "a"}),
        must("messages[1].content", "a string or a list of text parts", "an object"),
    ),
    (
        "openai",
        "content-part-text-number",
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": 5}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        must("messages[0].content[0].text", "a string", "a number"),
    ),
    (
        "openai",
        "content-part-string",
        openai_with(content=["a"]),
        must("messages[1].content[0]", 'a {"type": "text", "text": ...} part', "a string"),
    ),
    (
        "openai",
        "content-part-image",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        ("malformed field", "messages[0].content[0] has type 'image_url'; only text parts train"),
    ),
    ("openai", "tool-calls-number", openai_with(tool_calls=5), must("messages[1].tool_calls", "a list", "a number")),
    (
        "openai",
        "tool-calls-object",
        openai_with(tool_calls={"name": "get_weather"}),
        must("messages[1].tool_calls", "a list", "an object"),
    ),
    (
        "openai",
        "tool-call-number",
        openai_with(tool_calls=[5]),
        ("malformed field", "messages[1].tool_calls[0] needs a function with a name"),
    ),
    (
        "openai",
        "tool-call-no-name",
        openai_with(tool_calls=[call({"arguments": "{}"})]),
        ("malformed field", "messages[1].tool_calls[0] needs a function name (a string), got null"),
    ),
    (
        "openai",
        "tool-call-arguments-not-json",
        openai_with(tool_calls=[call({"name": "f", "arguments": "{city: Paris}"})]),
        ("malformed field", "messages[1].tool_calls[0] tool call arguments are not JSON"),
    ),
    (
        "openai",
        "tool-call-arguments-list",
        openai_with(tool_calls=[call({"name": "f", "arguments": "[1, 2]"})]),
        must("messages[1].tool_calls[0] tool call arguments", "a JSON object", "a list"),
    ),
    (
        "openai",
        "tool-call-arguments-number",
        openai_with(tool_calls=[call({"name": "f", "arguments": 5})]),
        must("messages[1].tool_calls[0] tool call arguments", "a JSON object", "a number"),
    ),
    (
        "openai",
        "tool-call-on-user",
        {"messages": [{"role": "user", "content": "x", "tool_calls": [call({"name": "f"})]}]},
        ("malformed field", "messages[0] is a 'user' message: only assistant messages make tool calls"),
    ),
    (
        "openai",
        "weight-string",
        openai_with(content="a", weight="1"),
        ("malformed field", "messages[1].weight must be 0 or 1"),
    ),
    (
        "openai",
        "reasoning-number",
        openai_with(content="a", reasoning_content=5),
        must("messages[1].reasoning_content", "a string", "a number"),
    ),
    (
        "openai",
        "tools-not-json",
        {**OPENAI, "tools": "[{"},
        ("malformed field", "field 'tools' is not valid JSON (Expecting property name enclosed in double quotes)"),
    ),
    (
        "openai",
        "label-object",
        {**OPENAI, "label": {"ok": 1}},
        ("malformed field", "KTO label must be true or false, got {'ok': 1}"),
    ),
    (
        "openai",
        "ends-with-user",
        {"messages": [{"role": "user", "content": "Hi"}]},
        ("wrong role order", "the conversation must end with an assistant answer"),
    ),
    # preference pairs (TRL layout)
    (
        "pair",
        "prompt-number",
        {"prompt": 5, "chosen": "c", "rejected": "r"},
        must("field 'prompt'", "a string or a list of messages", "a number"),
    ),
    (
        "pair",
        "chosen-number",
        {"prompt": "q", "chosen": 5, "rejected": "r"},
        must("field 'chosen'", "a string or a list of messages", "a number"),
    ),
    (
        "pair",
        "rejected-object",
        {"prompt": "q", "chosen": "c", "rejected": {"role": "assistant"}},
        must("field 'rejected'", "a string or a list of messages", "an object"),
    ),
    (
        "pair",
        "rejected-null",
        {"prompt": "q", "chosen": "c", "rejected": None},
        ("missing field", "missing field 'rejected'"),
    ),
    (
        "pair",
        "chosen-empty-list",
        {"prompt": "q", "chosen": [], "rejected": "r"},
        ("missing field", "field 'chosen' is empty"),
    ),
    (
        "pair",
        "chosen-nested-number",
        {"prompt": "q", "chosen": [{"role": "assistant", "content": 5}], "rejected": "r"},
        must("chosen[0].content", "a string or a list of text parts", "a number"),
    ),
    (
        "pair",
        "chosen-from-user",
        {"prompt": "q", "chosen": [{"role": "user", "content": "c"}], "rejected": "r"},
        ("wrong role order", "the chosen answer comes from 'user', expected assistant"),
    ),
    (
        "pair",
        "system-number",
        {"prompt": "q", "chosen": "c", "rejected": "r", "system": 1},
        must("field 'system'", "a string", "a number"),
    ),
    (
        "pair",
        "empty-rejected",
        {"prompt": "q", "chosen": "c", "rejected": " "},
        ("empty answer", "the rejected answer is empty"),
    ),
    # KTO
    (
        "kto",
        "completion-object",
        {"prompt": "q", "completion": {"a": 1}, "label": True},
        must("field 'completion'", "a string or a list of messages", "an object"),
    ),
    (
        "kto",
        "completion-null",
        {"prompt": "q", "completion": None, "label": True},
        ("missing field", "missing field 'completion'"),
    ),
    (
        "kto",
        "label-two",
        {"prompt": "q", "completion": "a", "label": 2},
        ("malformed field", "KTO label must be true or false, got 2"),
    ),
    (
        "kto",
        "label-word",
        {"prompt": "q", "completion": "a", "label": "good"},
        ("malformed field", "KTO label must be true or false, got 'good'"),
    ),
    (
        "kto",
        "tools-list-of-strings",
        {"prompt": "q", "completion": "a", "label": True, "tools": ["get_weather"]},
        ("malformed field", "tools[0] must be a tool definition with a function name"),
    ),
    # text
    ("text", "text-number", {"text": 5}, must("field 'text'", "a string", "a number")),
    ("text", "text-list", {"text": ["a", "b"]}, must("field 'text'", "a string", "a list")),
    ("text", "text-null", {"text": None}, ("missing field", "missing text field 'text'")),
    ("text", "text-empty", {"text": "  "}, ("empty text", "the text is empty")),
    # rows that are no object, or of no format
    ("alpaca", "row-number", 5, ("malformed row", "expected an object, got a number")),
    ("alpaca", "row-string", "just text", ("malformed row", "expected an object, got a string")),
    ("alpaca", "row-null", None, ("malformed row", "expected an object, got null")),
    ("alpaca", "row-list", [ALPACA], ("malformed row", "expected an object, got a list")),
    (
        "alpaca",
        "row-unknown-keys",
        {"question": "q", "answer": "a"},
        ("unknown format", "cannot tell the format from keys ['answer', 'question']"),
    ),
]


@pytest.mark.parametrize(("kind", "case", "bad", "expected"), CASES, ids=[f"{k}-{c}" for k, c, _, _ in CASES])
def test_a_bad_row_is_one_located_drop(tmp_path: Path, kind: str, case: str, bad: Any, expected: tuple[str, str]):
    path = write_jsonl(tmp_path / f"{kind}.jsonl", [good(kind, 1), bad, good(kind, 3)])
    conversations, report = load_conversations([str(path)])
    reason, detail = expected
    assert report.problems == [f"{path}:2: {reason}: {detail}"]
    assert report.dropped == {reason: 1}
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:3"]
    assert report.total == 3


def test_the_three_reported_rows_no_longer_stop_the_run(tmp_path: Path):
    """The rows of the issue: each raised a bare TypeError that stopped the whole run."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": 5}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": 5}]},
        {"instruction": "q", "output": "a", "history": 5},
        {"instruction": "Fine", "output": "Kept."},
    ]
    path = write_jsonl(tmp_path / "issue.jsonl", rows)
    conversations, report = load_conversations([str(path)])
    assert [c.messages for c in conversations] == [[Message("user", "Fine"), Message("assistant", "Kept.")]]
    assert report.problems == [
        f"{path}:1: malformed field: messages[0].content[0].text must be a string, got a number",
        f"{path}:2: malformed field: messages[1].tool_calls must be a list, got a number",
        f"{path}:3: malformed field: field 'history' must be a list of [user, assistant] pairs, got a number",
    ]


def test_good_tool_calls_and_arguments_forms_still_parse(tmp_path: Path):
    rows = [
        openai_with(tool_calls=[call({"name": "get_weather", "arguments": '{"city": "Paris"}'})]),
        openai_with(tool_calls=[call({"name": "get_weather", "arguments": {"city": "Rome"}})]),
        openai_with(tool_calls=[call({"name": "get_weather", "arguments": ""})], content=None),
        sharegpt_with({"from": "function_call", "value": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}),
    ]
    for row in rows:
        turns = row.get("messages") or row["conversations"]
        turns += [{"role": "tool", "content": "21"}, {"role": "assistant", "content": "21 degrees."}]
    path = write_jsonl(tmp_path / "tools.jsonl", rows)
    conversations, report = load_conversations([str(path)], dedup="none")
    assert report.problems == []
    assert [c.messages[1].tool_calls for c in conversations] == [
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        [{"name": "get_weather", "arguments": {"city": "Rome"}}],
        [{"name": "get_weather", "arguments": {}}],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    ]
    assert [m.role for m in conversations[3].messages] == ["user", "assistant", "tool", "assistant"]


def test_empty_optional_fields_mean_absent(tmp_path: Path):
    """null and empty values of optional fields (as CSV and Parquet files hold them) are no error."""
    rows = [
        {"instruction": "q1", "input": None, "output": "a1", "system": None, "history": "", "tools": ""},
        {"instruction": "q2", "input": "", "output": "a2", "system": "", "history": [], "tools": "[]"},
        {**OPENAI, "tools": None, "label": None},
        {"messages": [{"role": "user", "content": "q", "tool_calls": None}, {"role": "assistant", "content": "a"}]},
    ]
    path = write_jsonl(tmp_path / "empty.jsonl", rows)
    conversations, report = load_conversations([str(path)])
    assert report.problems == []
    assert [c.messages for c in conversations] == [
        [Message("user", "q1"), Message("assistant", "a1")],
        [Message("user", "q2"), Message("assistant", "a2")],
        [Message("user", "Hi"), Message("assistant", "Hello!")],
        [Message("user", "q"), Message("assistant", "a")],
    ]
    assert [c.tools for c in conversations] == [None] * 4


# ---------------------------------------------------------------------------------------------- lines that are no JSON


def test_unreadable_lines_are_located_drops(tmp_path: Path):
    path = tmp_path / "lines.jsonl"
    lines = [
        json.dumps(good("alpaca", 1)).encode(),
        b'{"instruction": "broken", "output": "x"',  # 2: cut short
        b'{"instruction": "q", "output": ' + b"9" * 5000 + b"}",  # 3: an integer too long to convert
        b"[" * 100_000 + b"]" * 100_000,  # 4: nested too deeply for the parser
        b'{"instruction": "caf\xe9", "output": "latin-1"}',  # 5: not UTF-8
        json.dumps(good("alpaca", 6)).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    conversations, report = load_conversations([str(path)])
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:6"]
    assert report.dropped == {"malformed JSON": 3, "not UTF-8": 1}
    assert [(p.where, p.reason) for p in report.issues] == [
        (f"{path}:2", "malformed JSON"),
        (f"{path}:3", "malformed JSON"),
        (f"{path}:4", "malformed JSON"),
        (f"{path}:5", "not UTF-8"),
    ]
    assert report.issues[0].detail == "malformed JSON (Expecting ',' delimiter at column 40)"
    assert report.issues[1].detail.startswith("malformed JSON (ValueError: Exceeds the limit (4300 digits)")
    assert report.issues[2].detail.startswith("malformed JSON (RecursionError: maximum recursion depth exceeded")
    assert report.issues[3].detail == "the line is not valid UTF-8 text"


def test_a_text_corpus_line_that_is_not_utf8_is_one_drop(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"First document.\n" + b"caf\xe9 au lait\n" + "Third, café.\n".encode())
    conversations, report = load_conversations([str(path)])
    assert [(c.source, c.text) for c in conversations] == [
        (f"{path}:1", "First document."),
        (f"{path}:3", "Third, café."),
    ]
    assert report.problems == [f"{path}:2: not UTF-8: the line is not valid UTF-8 text"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.csv", b"instruction,output\nq,caf\xe9\n", "rows.csv:2: not UTF-8 text"),
        ("rows.json", b'[\n  {"instruction": "q",\n   "output": "caf\xe9"}\n]\n', "rows.json:3: not UTF-8 text"),
        ("deep.json", b"[\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n]", "deep.json:2: invalid JSON (RecursionError"),
    ],
)
def test_files_that_cannot_be_split_into_rows_name_the_line(tmp_path: Path, name: str, content: bytes, message: str):
    """A CSV field or a JSON array element may span lines: there a bad byte stops the file, with its location."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        list(read_rows(path))
    assert str(info.value).startswith(f"{tmp_path}/{message}")


# ---------------------------------------------------------------------------------------------------- thinking


def test_unclosed_think_block_is_dropped_when_thinking_is_stripped(tmp_path: Path):
    rows = [
        openai_with(content="<think>a</think>Fine."),
        openai_with(content="<think>never closed. Answer."),
        {"prompt": "q", "chosen": "<think>x</think>Yes.", "rejected": "<think>half a thought"},
    ]
    path = write_jsonl(tmp_path / "think.jsonl", rows)
    conversations, report = load_conversations([str(path)], keep_thinking=False)
    assert [c.messages[-1].content for c in conversations] == ["Fine."]
    assert report.problems == [
        f"{path}:2: unclosed thinking: an assistant answer has <think> without </think>",
        f"{path}:3: unclosed thinking: an assistant answer has <think> without </think>",
    ]
    kept, report = load_conversations([str(path)], keep_thinking=True)
    assert report.problems == [] and kept[1].messages[-1].content == "<think>never closed. Answer."


# ---------------------------------------------------------------------------------------------------- safety nets


class _ExplodingFormats:
    """A format registry whose one parser fails the way an unforeseen value shape would."""

    @staticmethod
    def get(name: str) -> Any:
        def parse(row: dict[str, Any], *columns: Any) -> Any:
            return FORMATS.get(name)(row) if "boom" not in row else row["boom"] + 1

        return parse


def test_an_unforeseen_parser_failure_is_still_one_located_drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pipeline_module, "FORMATS", _ExplodingFormats)
    path = write_jsonl(tmp_path / "rows.jsonl", [good("alpaca", 1), {"instruction": "q", "boom": "x"}])
    conversations, report = load_conversations([str(path)])
    assert [c.source for c in conversations] == [f"{path}:1"]
    assert report.problems == [
        f'{path}:2: malformed row: it cannot be read as alpaca (TypeError: can only concatenate str (not "int") '
        "to str)"
    ]


def test_a_row_nested_too_deeply_to_fill_in_is_one_located_drop(tmp_path: Path):
    deep = "[" * 600 + "]" * 600  # valid JSON, but too deep to walk for placeholders
    path = tmp_path / "deep.jsonl"
    lines = [json.dumps(good("alpaca", 1)), f'{{"instruction": "q", "output": "a", "extra": {deep}}}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    conversations, report = load_conversations([str(path)], variables={"name": "Conch"})
    assert [c.source for c in conversations] == [f"{path}:1"]
    assert report.problems == [
        f"{path}:2: malformed row: it cannot be read as alpaca (RecursionError: maximum recursion depth exceeded)"
    ]
    kept, report = load_conversations([str(path)])  # without variables nothing walks it: the extra key is ignored
    assert [c.source for c in kept] == [f"{path}:1", f"{path}:2"] and report.problems == []


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_a_row_the_chat_template_refuses_is_one_located_drop(tokenizer):
    refusing = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    refusing.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rows = [
        Conversation([Message("user", "Hi"), Message("assistant", "Hello!")], source="t.jsonl:1"),
        Conversation([Message("system", "S"), Message("user", "Hi"), Message("assistant", "Yo")], source="t.jsonl:2"),
    ]
    report = DataReport(total=2)
    samples = prepare_samples(rows, refusing, 64, report)
    assert [s.source for s in samples] == ["t.jsonl:1"]
    assert (
        refusing.decode(samples[0].input_ids)
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    assert report.problems == ["t.jsonl:2: refused by the chat template: System role not supported"]
    assert report.balanced and report.kept == 1
