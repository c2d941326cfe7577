"""The one internal form of a training sample: a conversation of role/content messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ROLES", "Conversation", "Message", "RowError"]

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    """One chat turn. Assistant turns may carry tool calls ({"name", "arguments"}); `tool` turns carry results."""

    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None

    def to_template(self) -> dict[str, Any]:
        """The dict form chat templates take (OpenAI/transformers tool-call layout)."""
        item: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            item["tool_calls"] = [{"type": "function", "function": call} for call in self.tool_calls]
        return item


@dataclass
class Conversation:
    """A sample: messages plus where it came from (`file:line`) for error reports."""

    messages: list[Message]
    source: str = "<memory>"
    dataset: str = ""
    tools: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_template(self) -> list[dict[str, Any]]:
        """The list-of-dicts form chat templates take."""
        return [m.to_template() for m in self.messages]


class RowError(ValueError):
    """A row that cannot become a valid conversation; `reason` is a short category used for counts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
