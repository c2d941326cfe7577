"""The one internal form of a training sample: a conversation of role/content messages.

Every format becomes a `Conversation`. Besides plain chat data it carries the other sample kinds:
preference pairs (`chosen` / `rejected` answers to the conversation so far), KTO rows (`label` marks the final
answer desirable or not), raw text for continued pretraining (`text`, no messages) and labelled texts for
sequence classification (`text` and its class in `category`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ROLES", "Conversation", "Message", "RowError", "SampleKind"]

ROLES = ("system", "user", "assistant", "tool")

SampleKind = Literal["chat", "preference", "kto", "text", "classify"]


@dataclass
class Message:
    """One chat turn. Assistant turns may carry tool calls ({"name", "arguments"}); `tool` turns carry results.

    `weight` 0 excludes an assistant turn from the loss (OpenAI fine-tuning's per-message weight).
    """

    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    weight: float | None = None

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
    chosen: Message | None = None
    rejected: Message | None = None
    label: bool | None = None
    text: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> SampleKind:
        """chat, preference (chosen/rejected), kto (labelled), text (raw, for continued pretraining) or classify
        (a text and its class)."""
        if self.category is not None:
            return "classify"
        if self.text is not None:
            return "text"
        if self.chosen is not None:
            return "preference"
        if self.label is not None:
            return "kto"
        return "chat"

    def to_template(self) -> list[dict[str, Any]]:
        """The list-of-dicts form chat templates take."""
        return [m.to_template() for m in self.messages]

    def content_key(self) -> str:
        """Every piece of text the sample holds, in order (for duplicate detection)."""
        parts = [self.text or "", repr(self.tools or "")]
        for message in [*self.messages, self.chosen, self.rejected]:
            if message is not None:
                parts.append(f"{message.role}\x1f{message.content}\x1f{message.tool_calls or ''}")
        if self.label is not None:
            parts.append(str(self.label))
        if self.category is not None:
            parts.append(f"class\x1f{self.category}")
        return "\x1e".join(parts)


class RowError(ValueError):
    """A row that cannot become a valid conversation; `reason` is a short category used for counts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
