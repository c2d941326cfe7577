"""LLaMA-Factory v1 rows: {"messages": [...], "tools": "..."} and {"chosen_messages", "rejected_messages"} pairs.

Each message is {"role", "content": [{"type", "value"}, ...], "loss_weight"}. `text` parts join into the message
text; `reasoning` parts become the assistant's thinking trace (a leading <think> block, as `reasoning_content` does
in OpenAI rows); `tool_call` parts (also the older `tool_calls`) are calls, `tools` parts tool definitions.
Image, video and audio parts drop the row: tuneforge trains text models.

`loss_weight` 0 keeps an assistant turn out of the loss. tuneforge has no per-token loss weights, so any other
positive weight trains the turn at weight 1, and weights on user/system/tool messages are not trained;
`loss_weight_note` counts both for the data report.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, json_type, kto_label, malformed, tool_call
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import ROLES, Conversation, Message, RowError

__all__ = ["MEDIA_PARTS", "loss_weight_note", "parse_llamafactory_v1"]

MEDIA_PARTS = ("image_url", "video_url", "audio_url")
_DEFAULT = Columns(messages="messages")


def _part_value(part: Any, where: str) -> tuple[str, Any]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise malformed(where, 'a {"type": ..., "value": ...} part', part)
    if "value" not in part:
        raise RowError("malformed field", f"{where} ({part['type']}) has no 'value'")
    return part["type"], part["value"]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise malformed(f"{where}.value", "a string", value)
    return value


def _calls(value: Any, where: str) -> list[dict[str, Any]]:
    """Tool calls of a `tool_call` part: {"name", "arguments"} (or a list of them), as JSON text or as is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise RowError("malformed field", f"{where}.value is not valid JSON") from None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(call, dict) for call in calls):
        raise malformed(f"{where}.value", 'a {"name", "arguments"} call', value)
    return [tool_call(call.get("name"), call.get("arguments"), where) for call in calls]


class _Parts:
    """What the content parts of one message hold."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []

    def add(self, kind: str, value: Any, where: str) -> None:
        if kind == "text":
            self.text.append(_text(value, where))
        elif kind == "reasoning":
            self.reasoning.append(_text(value, where))
        elif kind in ("tool_call", "tool_calls"):
            self.calls += _calls(value, where)
        elif kind == "tools":
            self.tools += parse_tools(value, f"{where}.value") or []
        elif kind in MEDIA_PARTS:
            raise RowError(
                "unsupported content", f"{where} is an {kind} part: tuneforge trains text models on text alone"
            )
        else:
            raise RowError("unsupported content", f"{where} has type {kind!r} (text, reasoning, tool_call, tools)")


def _parts(content: Any, where: str) -> _Parts:
    parts = _Parts()
    if isinstance(content, str):  # the plain OpenAI form, as LLaMA-Factory's own converters read it
        parts.text.append(content)
        return parts
    if content is None:
        return parts
    if not isinstance(content, list):
        raise malformed(f"{where}.content", "a list of content parts", content)
    for index, part in enumerate(content):
        parts.add(*_part_value(part, f"{where}.content[{index}]"), f"{where}.content[{index}]")
    return parts


def _loss_weight(item: dict[str, Any], where: str) -> float | None:
    value = item.get("loss_weight")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowError("malformed field", f"{where}.loss_weight must be a number >= 0, got {json_type(value)}")
    try:
        weight = float(value)
    except OverflowError:  # an integer too large for a float
        weight = float("inf")
    if not 0 <= weight < float("inf"):
        raise RowError("malformed field", f"{where}.loss_weight must be a number >= 0, got {weight:g}")
    return weight


def _message(item: Any, where: str, tools: list[dict[str, Any]]) -> Message:
    if not isinstance(item, dict) or "role" not in item:
        raise RowError("malformed field", f"{where} needs 'role' and 'content'")
    role = item["role"]
    if not isinstance(role, str):
        raise malformed(f"{where}.role", "a string", role)
    if role not in ROLES:
        raise RowError("unsupported role", f"{where} has role {role!r} ({', '.join(ROLES)})")
    parts = _parts(item.get("content"), where)
    tools += parts.tools
    text = "".join(parts.text)
    if role != "assistant" and (parts.reasoning or parts.calls):
        raise RowError("malformed field", f"{where} is a {role!r} message: only assistant messages reason or call")
    thinking = "".join(parts.reasoning).strip()
    if thinking:
        text = f"<think>\n{thinking}\n</think>\n\n{text}"
    return Message(role, text, tool_calls=parts.calls or None, weight=_loss_weight(item, where))


def _messages(raw: Any, key: str, tools: list[dict[str, Any]]) -> list[Message]:
    if raw is None:
        raise RowError("missing field", f"missing field {key!r}")
    if not isinstance(raw, list):
        raise malformed(f"field {key!r}", "a list of messages", raw)
    messages = [_message(item, f"{key}[{index}]", tools) for index, item in enumerate(raw)]
    if tools and messages and messages[0].role == "system" and not messages[0].content.strip():
        messages = messages[1:]  # a system message that only carried the tool definitions
    return messages


def _pair(row: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[list[Message], Message, Message]:
    chosen = _messages(row.get("chosen_messages"), "chosen_messages", tools)
    rejected = _messages(row.get("rejected_messages"), "rejected_messages", [])
    if not chosen or not rejected:
        raise RowError("missing field", "chosen_messages and rejected_messages must each end with an answer")
    if [m.to_template() for m in chosen[:-1]] != [m.to_template() for m in rejected[:-1]]:
        raise RowError("malformed field", "chosen_messages and rejected_messages differ before the last message")
    return chosen[:-1], chosen[-1], rejected[-1]


@FORMATS.register("llamafactory_v1")
def parse_llamafactory_v1(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one LLaMA-Factory v1 row (SFT messages or a chosen/rejected pair; a `label` column makes it KTO)."""
    tools: list[dict[str, Any]] = []
    tools_key = columns.tools or "tools"
    if "chosen_messages" in row or "rejected_messages" in row:
        prompt, chosen, rejected = _pair(row, tools)
        return ParsedRow(prompt, (parse_tools(row.get(tools_key), tools_key) or []) + tools or None, chosen, rejected)
    messages = _messages(row.get(columns.messages or "messages"), columns.messages or "messages", tools)
    tools = (parse_tools(row.get(tools_key), tools_key) or []) + tools
    return ParsedRow(messages, tools or None, label=kto_label(columns.get(row, "kto_tag")))


def loss_weight_note(conversations: list[Conversation]) -> str:
    """One line for the data report on the loss weights tuneforge cannot honour exactly ("" when there are none).

    Assistant weights other than 0 and 1 train at weight 1; positive weights on other messages are not trained.
    """
    fractional: list[str] = []
    prompt: list[str] = []
    for conversation in conversations:
        messages = [m for m in (*conversation.messages, conversation.chosen, conversation.rejected) if m is not None]
        weights = [(m.role, m.weight) for m in messages if m.weight is not None]
        if any(role == "assistant" and weight not in (0, 1) for role, weight in weights):
            fractional.append(conversation.source)
        if any(role != "assistant" and weight > 0 for role, weight in weights):
            prompt.append(conversation.source)
    lines = []
    if fractional:
        lines.append(
            f"loss_weight values other than 0 and 1 are trained at weight 1 ({len(fractional)} rows, "
            f"first {fractional[0]})"
        )
    if prompt:
        lines.append(
            f"loss_weight on user/system/tool messages is not trained ({len(prompt)} rows, first {prompt[0]}): "
            "tuneforge trains assistant turns; data.train_on_prompt trains every token"
        )
    return "; ".join(lines)
