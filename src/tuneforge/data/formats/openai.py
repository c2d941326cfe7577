"""OpenAI fine-tuning rows: {"messages": [...], "tools": [...]}, one per JSONL line, tool calls included."""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import FORMATS, ParsedRow
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import ROLES, Message, RowError

__all__ = ["parse_openai"]


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) == len(content):
            return "".join(parts)
    raise RowError("malformed field", f"messages[{index}].content must be text")


def _tool_calls(raw: Any, index: int) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or "name" not in function:
            raise RowError("malformed field", f"messages[{index}].tool_calls items need function.name")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise RowError("malformed field", f"messages[{index}] tool call arguments are not JSON") from None
        calls.append({"name": function["name"], "arguments": arguments})
    return calls


@FORMATS.register("openai")
def parse_openai(row: dict[str, Any]) -> ParsedRow:
    """Convert one OpenAI-style row (`developer` is treated as system)."""
    items = row.get("messages")
    if not isinstance(items, list):
        raise RowError("missing field", "field 'messages' must be a list")
    messages: list[Message] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "role" not in item:
            raise RowError("malformed field", f"messages[{index}] needs 'role' and 'content'")
        role = "system" if item["role"] == "developer" else item["role"]
        if role not in ROLES:
            raise RowError("unsupported role", f"messages[{index}] has role {item['role']!r}")
        content = _content_text(item.get("content"), index)
        messages.append(Message(role, content, tool_calls=_tool_calls(item.get("tool_calls"), index)))
    return ParsedRow(messages, parse_tools(row.get("tools")))
