"""ShareGPT rows: {"conversations": [{"from": ..., "value": ...}], "system": ..., "tools": ...}.

LLaMA-Factory `columns`/`tags` rename the fields (e.g. messages with role/content); preference rows end with the
prompt and carry `chosen`/`rejected` turns; KTO rows carry a label column.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import (
    FORMATS,
    Columns,
    ParsedRow,
    kto_label,
    malformed,
    optional_text,
    tool_call,
    turn_weight,
)
from tuneforge.data.messages import Message, RowError

__all__ = ["SHAREGPT_ROLES", "parse_sharegpt", "parse_tools"]

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "call",
    "observation": "tool",
    "tool": "tool",
}
_TAG_ROLES = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "call",
    "system_tag": "system",
}
_DEFAULT = Columns(messages="conversations")


def parse_tools(raw: Any, key: str = "tools") -> list[dict[str, Any]] | None:
    """Tool definitions given as a list or a JSON string of a list; null, [], "" and "[]" mean none.

    Each definition is {"type": "function", "function": {...}} or the bare function {"name": ..., ...}.
    """
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise RowError("malformed field", f"field {key!r} is not valid JSON ({err.msg})") from None
        except (ValueError, RecursionError):
            raise RowError("malformed field", f"field {key!r} is not valid JSON") from None
        if raw is None or raw == []:
            return None
    if not isinstance(raw, list):
        raise malformed(f"field {key!r}", "a list of tool definitions", raw)
    tools = []
    for index, tool in enumerate(raw):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RowError("malformed field", f"{key}[{index}] must be a tool definition with a function name")
        tools.append(tool if "function" in tool else {"type": "function", "function": tool})
    return tools


def _tool_call(value: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise RowError("malformed field", f"{where} (function_call) is not valid JSON") from None
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise RowError("malformed field", f"{where} (function_call) holds no call")
    if not all(isinstance(c, dict) for c in calls):
        raise malformed(f"{where} (function_call)", "a call object or a list of them", value)
    return [tool_call(c.get("name"), c.get("arguments"), f"{where} (function_call)") for c in calls]


def _roles(columns: Columns) -> dict[str, str]:
    roles = dict(SHAREGPT_ROLES)
    for tag, role in _TAG_ROLES.items():
        if tag in columns.tags:
            roles[str(columns.tags[tag]).lower()] = role
    return roles


def _turn(turn: Any, where: str, columns: Columns, roles: dict[str, str]) -> Message:
    role_key = columns.tags.get("role_tag", "from")
    content_key = columns.tags.get("content_tag", "value")
    if isinstance(turn, dict) and role_key not in turn and "role" in turn:  # OpenAI-style turns in ShareGPT files
        role_key, content_key = "role", "content"
    if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
        raise RowError("malformed field", f"{where} needs {role_key!r} and {content_key!r}")
    if not isinstance(turn[role_key], str):
        raise malformed(f"{where}.{role_key}", "a string", turn[role_key])
    role = roles.get(turn[role_key].lower())
    if role is None:
        raise RowError("unsupported role", f"{where} has role {turn[role_key]!r}")
    value = turn[content_key]
    weight = turn_weight(turn.get("weight"), where) if role in ("assistant", "call") else None
    if role == "call":
        return Message("assistant", "", tool_calls=_tool_call(value, where), weight=weight)
    if not isinstance(value, str):
        raise malformed(f"{where}.{content_key}", "a string", value)
    return Message(role, value, weight=weight)


@FORMATS.register("sharegpt")
def parse_sharegpt(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one ShareGPT row, including function_call / observation turns and a `tools` column."""
    key = columns.messages or "conversations"
    turns = row.get(key)
    if turns is None:
        raise RowError("missing field", f"missing field {key!r}")
    if not isinstance(turns, list):
        raise malformed(f"field {key!r}", "a list of turns", turns)
    roles = _roles(columns)
    messages = [_turn(turn, f"{key}[{i}]", columns, roles) for i, turn in enumerate(turns)]
    system = optional_text(row, columns.system)
    if system and system.strip() and not (messages and messages[0].role == "system"):  # a system turn overrides it
        messages.insert(0, Message("system", system))
    tools = parse_tools(columns.get(row, "tools"), columns.tools or "tools")
    chosen, rejected = columns.get(row, "chosen"), columns.get(row, "rejected")
    if chosen is not None or rejected is not None:
        pick = lambda turn, name: None if turn is None else _turn(turn, name, columns, roles)  # noqa: E731
        return ParsedRow(messages, tools, pick(chosen, "chosen"), pick(rejected, "rejected"))
    return ParsedRow(messages, tools, label=kto_label(columns.get(row, "kto_tag")))
