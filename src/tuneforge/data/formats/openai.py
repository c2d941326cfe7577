"""OpenAI fine-tuning rows: {"messages": [...], "tools": [...]}, one per JSONL line, tool calls included.

Assistant messages may carry `weight` (0 excludes the turn from the loss) and `reasoning_content` (a thinking
trace, kept as a leading <think> block). A boolean `label` column makes the row a KTO example.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, kto_label, malformed, tool_call, turn_weight
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import ROLES, Message, RowError

__all__ = ["parse_message_list", "parse_openai", "parse_tool_call"]

_DEFAULT = Columns(messages="messages")


def _content_text(content: Any, where: str) -> str:
    """A message's text: a string, null (a tool-call turn) or a list of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise malformed(f"{where}.content", "a string or a list of text parts", content)
    parts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise malformed(f"{where}.content[{index}]", 'a {"type": "text", "text": ...} part', part)
        if part.get("type") != "text":
            raise RowError(
                "malformed field", f"{where}.content[{index}] has type {part.get('type')!r}; only text parts train"
            )
        if not isinstance(part.get("text"), str):
            raise malformed(f"{where}.content[{index}].text", "a string", part.get("text"))
        parts.append(part["text"])
    return "".join(parts)


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise malformed(f"{where}.tool_calls", "a list", raw)
    return [parse_tool_call(call, f"{where}.tool_calls[{index}]") for index, call in enumerate(raw)]


def parse_tool_call(call: Any, where: str) -> dict[str, Any]:
    """One OpenAI tool call object ({"function": {"name", "arguments"}}, arguments as JSON text or an object)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise RowError("malformed field", f"{where} needs a function with a name")
    return tool_call(function.get("name"), function.get("arguments"), where)


def _thinking(item: dict[str, Any], where: str) -> str:
    thinking = item.get("reasoning_content")
    if thinking is not None and not isinstance(thinking, str):
        raise malformed(f"{where}.reasoning_content", "a string", thinking)
    return (thinking or "").strip()


def _message(item: Any, where: str) -> Message:
    if not isinstance(item, dict) or "role" not in item:
        raise RowError("malformed field", f"{where} needs 'role' and 'content'")
    if not isinstance(item["role"], str):
        raise malformed(f"{where}.role", "a string", item["role"])
    role = "system" if item["role"] == "developer" else item["role"]
    if role not in ROLES:
        raise RowError("unsupported role", f"{where} has role {item['role']!r}")
    content = _content_text(item.get("content"), where)
    thinking = _thinking(item, where) if role == "assistant" else ""
    if thinking:
        content = f"<think>\n{thinking}\n</think>\n\n{content}"
    weight = turn_weight(item.get("weight"), where) if role == "assistant" else None
    calls = _tool_calls(item.get("tool_calls"), where)
    if calls and role != "assistant":
        raise RowError("malformed field", f"{where} is a {role!r} message: only assistant messages make tool calls")
    return Message(role, content, tool_calls=calls, weight=weight)


def parse_message_list(items: Any, key: str) -> list[Message]:
    """A list of OpenAI-style message dicts (a plain string counts as one user message)."""
    if isinstance(items, str):
        return [Message("user", items)]
    if items is None:
        raise RowError("missing field", f"missing field {key!r}")
    if not isinstance(items, list):
        raise malformed(f"field {key!r}", "a string or a list of messages", items)
    return [_message(item, f"{key}[{index}]") for index, item in enumerate(items)]


@FORMATS.register("openai")
def parse_openai(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one OpenAI-style row (`developer` is treated as system)."""
    key = columns.messages or "messages"
    if row.get(key) is not None and not isinstance(row[key], list):
        raise malformed(f"field {key!r}", "a list of messages", row[key])
    messages = parse_message_list(row.get(key), key)
    tools = parse_tools(columns.get(row, "tools"), columns.tools or "tools")
    return ParsedRow(messages, tools, label=kto_label(columns.get(row, "kto_tag")))
