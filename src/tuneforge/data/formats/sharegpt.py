"""ShareGPT rows: {"conversations": [{"from": ..., "value": ...}], "system": ..., "tools": ...}.

LLaMA-Factory `columns`/`tags` rename the fields (e.g. messages with role/content); preference rows end with the
prompt and carry `chosen`/`rejected` turns; KTO rows carry a label column.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, kto_label
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


def _tool_call(value: str, where: str) -> list[dict[str, Any]]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError:
        raise RowError("malformed field", f"{where} (function_call) is not valid JSON") from None
    calls = call if isinstance(call, list) else [call]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        raise RowError("malformed field", f"{where} (function_call) needs a 'name'")
    return [{"name": c["name"], "arguments": c.get("arguments", {})} for c in calls]


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
    role = roles.get(str(turn[role_key]).lower())
    if role is None:
        raise RowError("unsupported role", f"{where} has role {turn[role_key]!r}")
    value = turn[content_key]
    if not isinstance(value, str):
        raise RowError("malformed field", f"{where}.{content_key} must be a string")
    weight = turn.get("weight")
    if role == "call":
        return Message("assistant", "", tool_calls=_tool_call(value, where), weight=weight)
    return Message(role, value, weight=weight if role == "assistant" else None)


@FORMATS.register("sharegpt")
def parse_sharegpt(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one ShareGPT row, including function_call / observation turns and a `tools` column."""
    key = columns.messages or "conversations"
    turns = row.get(key)
    if not isinstance(turns, list):
        raise RowError("missing field", f"field {key!r} must be a list of turns")
    roles = _roles(columns)
    messages: list[Message] = []
    system = columns.get(row, "system")
    if isinstance(system, str) and system.strip():
        messages.append(Message("system", system))
    messages += [_turn(turn, f"{key}[{i}]", columns, roles) for i, turn in enumerate(turns)]
    tools = parse_tools(columns.get(row, "tools"))
    chosen, rejected = columns.get(row, "chosen"), columns.get(row, "rejected")
    if chosen is not None or rejected is not None:
        pick = lambda turn, name: None if turn is None else _turn(turn, name, columns, roles)  # noqa: E731
        return ParsedRow(messages, tools, pick(chosen, "chosen"), pick(rejected, "rejected"))
    return ParsedRow(messages, tools, label=kto_label(columns.get(row, "kto_tag")))
