"""The format registry, column mapping, automatic detection and checks shared by all formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tuneforge.data.messages import Message, RowError
from tuneforge.registry import Registry

__all__ = [
    "FORMATS",
    "Columns",
    "ParsedRow",
    "RowParser",
    "check_roles",
    "detect_format",
    "json_type",
    "kto_label",
    "malformed",
    "optional_text",
    "require_text",
    "tool_call",
    "turn_weight",
]


@dataclass(frozen=True)
class Columns:
    """Which field of a row holds what (LLaMA-Factory's `columns` and `tags`); None means the row has no such field.

    Alpaca layout: prompt, query, response, history, system, tools; ShareGPT/OpenAI layout: messages, system, tools
    with role/content tags; preference data: chosen, rejected; KTO: kto_tag; raw text: text; classification rows:
    text and label (a class name or integer id).
    """

    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = "history"
    system: str | None = "system"
    tools: str | None = "tools"
    messages: str | None = None
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    kto_tag: str | None = "label"
    text: str | None = "text"
    label: str | None = "label"
    tags: dict[str, str] = field(default_factory=dict)

    def get(self, row: dict[str, Any], key: str) -> Any:
        """The row's value for column `key` (None when unmapped or absent)."""
        column = getattr(self, key)
        return row.get(column) if column else None


class ParsedRow(NamedTuple):
    """What a format parser returns."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    chosen: Message | None = None
    rejected: Message | None = None
    label: bool | None = None
    text: str | None = None
    category: str | None = None


RowParser = Callable[[dict[str, Any], Columns], ParsedRow]

FORMATS: Registry[RowParser] = Registry("data format")


def detect_format(row: Any) -> str | None:
    """Guess a row's format from its keys; None when no format fits."""
    if not isinstance(row, dict):
        return None
    if "chosen_messages" in row or "rejected_messages" in row:
        return "llamafactory_v1"
    if "messages" in row:
        return "llamafactory_v1" if _typed_messages(row["messages"]) else "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    if "chosen" in row and "rejected" in row or "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    return None


def _typed_messages(messages: Any) -> bool:
    """LLaMA-Factory v1 messages: a `loss_weight`, or content given as {"type", "value"} parts."""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and "loss_weight" in message:
            return True
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(part, dict) and "value" in part for part in content):
            return True
    return False


def json_type(value: Any) -> str:
    """How a value reads in JSON terms ("a number", "a list", ...), for messages about wrong field types."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def malformed(where: str, expected: str, value: Any) -> RowError:
    """The RowError for a field of the wrong type: `where` must be `expected`, got (its JSON type)."""
    return RowError("malformed field", f"{where} must be {expected}, got {json_type(value)}")


def require_text(row: dict[str, Any], key: str) -> str:
    """row[key] as a string, or a RowError naming the missing or malformed field."""
    if key not in row or row[key] is None:
        raise RowError("missing field", f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise malformed(f"field {key!r}", "a string", value)
    return value


def optional_text(row: dict[str, Any], key: str | None) -> str | None:
    """row[key] when it is a string, None when the field is unmapped, absent or null; any other type is an error."""
    value = row.get(key) if key else None
    if value is None or isinstance(value, str):
        return value
    raise malformed(f"field {key!r}", "a string", value)


def turn_weight(value: Any, where: str) -> float | None:
    """An assistant turn's loss weight: absent, 0 or 1 (OpenAI fine-tuning's `weight`)."""
    if value is None:
        return None
    if not isinstance(value, int | float) or value not in (0, 1):
        raise RowError("malformed field", f"{where}.weight must be 0 or 1")
    return value


def tool_call(name: Any, arguments: Any, where: str) -> dict[str, Any]:
    """One tool call as {"name", "arguments"}: a function name and an object of arguments (or its JSON text)."""
    if not isinstance(name, str) or not name.strip():
        raise RowError("malformed field", f"{where} needs a function name (a string), got {json_type(name)}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            raise RowError("malformed field", f"{where} tool call arguments are not JSON") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise malformed(f"{where} tool call arguments", "a JSON object", arguments)
    return {"name": name, "arguments": arguments}


def kto_label(value: Any) -> bool | None:
    """A KTO desirable/undesirable label from bool, 0/1 or true/false text; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RowError("malformed field", f"KTO label must be true or false, got {value!r}")


def check_roles(messages: list[Message], needs_answer: bool = True) -> None:
    """Require [system] user, then assistant turns answering users or tool results.

    With `needs_answer` the conversation must end with an assistant answer; preference rows end with the prompt.
    """
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
        _check_not_empty(message, index)
    if needs_answer and previous != "assistant":
        raise RowError("wrong role order", "the conversation must end with an assistant answer")
    if not needs_answer and previous not in ("user", "tool"):
        raise RowError("wrong role order", "a preference prompt must end with a user (or tool) message")


def _check_not_empty(message: Message, index: int) -> None:
    if message.role in ("user", "assistant") and not message.content.strip() and not message.tool_calls:
        reason = "empty answer" if message.role == "assistant" else "empty prompt"
        raise RowError(reason, f"message {index + 1} ({message.role}) is empty")


def check_answer(message: Message | None, which: str) -> Message:
    """A chosen/rejected answer must exist, come from the assistant and not be empty."""
    if message is None:
        raise RowError("missing field", f"missing the {which} answer")
    if message.role != "assistant":
        raise RowError("wrong role order", f"the {which} answer comes from {message.role!r}, expected assistant")
    if not message.content.strip() and not message.tool_calls:
        raise RowError("empty answer", f"the {which} answer is empty")
    return message
