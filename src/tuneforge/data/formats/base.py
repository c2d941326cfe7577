"""The format registry, automatic detection and checks shared by all formats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from tuneforge.data.messages import Message, RowError
from tuneforge.registry import Registry

__all__ = ["FORMATS", "ParsedRow", "RowParser", "check_roles", "detect_format", "require_text"]

RowParser = Callable[[dict[str, Any]], "ParsedRow"]


class ParsedRow(NamedTuple):
    """What a format parser returns: the messages and, for tool-calling data, the tool definitions."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None


FORMATS: Registry[RowParser] = Registry("data format")


def detect_format(row: Any) -> str | None:
    """Guess a row's format from its keys; None when no format fits."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


def require_text(row: dict[str, Any], key: str) -> str:
    """row[key] as a string, or a RowError naming the missing or malformed field."""
    if key not in row:
        raise RowError("missing field", f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise RowError("malformed field", f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def check_roles(messages: list[Message]) -> None:
    """Require [system] user, then assistant turns answering users or tool results, ending with an answer."""
    turns = messages[1:] if messages and messages[0].role == "system" else messages
    if not turns:
        raise RowError("empty conversation", "no user/assistant messages")
    allowed_after = {
        "": {"user"},
        "user": {"assistant"},
        "assistant": {"user"},
        "call": {"tool"},
        "tool": {"tool", "assistant"},
    }
    previous = ""
    for index, message in enumerate(turns):
        if message.role not in allowed_after[previous]:
            expected = " or ".join(sorted(allowed_after[previous]))
            raise RowError("wrong role order", f"message {index + 1} is {message.role!r}, expected {expected}")
        previous = "call" if message.tool_calls else message.role
        if message.role in ("user", "assistant") and not message.content.strip() and not message.tool_calls:
            reason = "empty answer" if message.role == "assistant" else "empty prompt"
            raise RowError(reason, f"message {index + 1} ({message.role}) is empty")
    if previous != "assistant":
        raise RowError("wrong role order", "the conversation must end with an assistant answer")
