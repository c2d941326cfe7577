"""ShareGPT rows: {"conversations": [{"from": ..., "value": ...}], "system": ..., "tools": ...}."""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import FORMATS, ParsedRow
from tuneforge.data.messages import Message, RowError

__all__ = ["SHAREGPT_ROLES", "parse_sharegpt", "parse_tools"]

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}


def parse_tools(raw: Any) -> list[dict[str, Any]] | None:
    """Tool definitions given as a list or a JSON string of a list; [] and "" mean none."""
    if raw in (None, "", []):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise RowError("malformed field", f"field 'tools' is not valid JSON ({err.msg})") from None
        if not raw:
            return None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise RowError("malformed field", "field 'tools' must be a list of tool definitions")
    return [t if "function" in t else {"type": "function", "function": t} for t in raw]


def _tool_call(value: str, index: int) -> list[dict[str, Any]]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError:
        raise RowError("malformed field", f"conversations[{index}] (function_call) is not valid JSON") from None
    calls = call if isinstance(call, list) else [call]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        raise RowError("malformed field", f"conversations[{index}] (function_call) needs a 'name'")
    return [{"name": c["name"], "arguments": c.get("arguments", {})} for c in calls]


@FORMATS.register("sharegpt")
def parse_sharegpt(row: dict[str, Any]) -> ParsedRow:
    """Convert one ShareGPT row, including function_call / observation turns and a `tools` column."""
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise RowError("missing field", "field 'conversations' must be a list")
    messages: list[Message] = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.append(Message("system", system))
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError("malformed field", f"conversations[{index}] needs 'from' and 'value'")
        tag = str(turn["from"]).lower()
        role = SHAREGPT_ROLES.get(tag)
        if role is None:
            raise RowError("unsupported role", f"conversations[{index}] has role {turn['from']!r}")
        if not isinstance(turn["value"], str):
            raise RowError("malformed field", f"conversations[{index}].value must be a string")
        if tag == "function_call":
            messages.append(Message("assistant", "", tool_calls=_tool_call(turn["value"], index)))
        else:
            messages.append(Message(role, turn["value"]))
    return ParsedRow(messages, parse_tools(row.get("tools")))
