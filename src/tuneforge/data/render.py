"""Render a conversation with the tokenizer's own chat template into input_ids and labels.

Labels come from the template itself: the text an assistant turn adds is the difference between rendering the
conversation up to that turn (with the generation prompt) and rendering it including the turn. The full text is
tokenized once, so the ids equal `apply_chat_template(..., tokenize=True)`; a token is supervised when it starts
inside an assistant span.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tuneforge.data.messages import Conversation, RowError

__all__ = ["IGNORE_INDEX", "RenderedSample", "assistant_spans", "render_conversation", "render_text"]

IGNORE_INDEX = -100


@dataclass
class RenderedSample:
    """Token ids and labels (IGNORE_INDEX where no loss is taken) of one conversation."""

    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _supports_tools(tokenizer: Any) -> bool:
    template = tokenizer.chat_template or ""
    return "tool_calls" in template


def _plain_tool_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """For templates without tool support: tool calls and tool definitions written as text the model can learn."""
    messages = []
    for message in conversation.to_template():
        if "tool_calls" in message:
            calls = [json.dumps(c["function"], ensure_ascii=False) for c in message.pop("tool_calls")]
            text = "\n".join(f"<tool_call>\n{c}\n</tool_call>" for c in calls)
            message["content"] = f"{message['content']}\n{text}".strip()
        messages.append(message)
    if conversation.tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in conversation.tools)
        tools_text = f"You may call these tools:\n<tools>\n{listing}\n</tools>"
        if messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{tools_text}"}
        else:
            messages.insert(0, {"role": "system", "content": tools_text})
    return messages


def _template_inputs(tokenizer: Any, conversation: Conversation) -> tuple[list[dict[str, Any]], Any]:
    if conversation.tools is None and not any(m.tool_calls for m in conversation.messages):
        return conversation.to_template(), None
    if _supports_tools(tokenizer):
        return conversation.to_template(), conversation.tools
    return _plain_tool_messages(conversation), None


def render_text(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, generation: bool = False) -> str:
    """The chat template's text for `messages` (a thin wrapper so every caller renders the same way)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RowError("no chat template", "the tokenizer has no chat template")
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation)


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> tuple[str, list[range]]:
    """The full rendered text and the character ranges each assistant turn adds to it."""
    full = render_text(tokenizer, messages, tools)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_text(tokenizer, messages[:index], tools, generation=True)
        upto = render_text(tokenizer, messages[: index + 1], tools)
        if not (full.startswith(before) and full.startswith(upto) and len(upto) >= len(before)):
            raise RowError(
                "template not prefix-stable",
                "the chat template renders earlier turns differently once later turns exist, so the loss mask "
                "cannot be derived from it",
            )
        spans.append(range(len(before), len(upto)))
    return full, spans


def render_conversation(tokenizer: Any, conversation: Conversation, cutoff_len: int) -> RenderedSample:
    """Tokenize `conversation` with the model's template; labels only on assistant turns; cut at `cutoff_len`."""
    messages, tools = _template_inputs(tokenizer, conversation)
    text, spans = assistant_spans(tokenizer, messages, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        if end > start and any(start in span for span in spans):
            labels[position] = input_ids[position]
    truncated = len(input_ids) > cutoff_len
    if truncated:
        input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    if all(label == IGNORE_INDEX for label in labels):
        reason = "all labels masked after truncation" if truncated else "all labels masked"
        raise RowError(reason, f"no assistant token within the first {cutoff_len} tokens")
    return RenderedSample(input_ids, labels, source=conversation.source, truncated=truncated)
