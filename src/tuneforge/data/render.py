"""Render a conversation with the tokenizer's own chat template into input_ids and labels.

Labels come from the template itself: the text an assistant turn adds is the difference between rendering the
conversation up to that turn (with the generation prompt) and rendering it including the turn. The full text is
tokenized once, so the ids equal `apply_chat_template(..., tokenize=True)`; a token is supervised when it starts
inside an assistant span.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tuneforge.data.messages import Conversation, Message, RowError

if TYPE_CHECKING:
    from tuneforge.data.soft_targets import BaseDistribution

__all__ = [
    "IGNORE_INDEX",
    "MaskOptions",
    "RenderedSample",
    "assistant_spans",
    "conversation_text",
    "positions_in_spans",
    "render_classification",
    "render_conversation",
    "render_sample",
    "render_samples",
    "render_text",
]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskOptions:
    """Which tokens carry the loss: assistant turns (default), every token, or only the last assistant turn.

    Assistant messages with `weight` 0 are never supervised (unless `train_on_prompt` supervises everything).
    """

    train_on_prompt: bool = False
    mask_history: bool = False


@dataclass
class RenderedSample:
    """Token ids and labels (IGNORE_INDEX where no loss is taken) of one sample.

    A preference sample holds the chosen answer and, in `rejected`, the rejected one; a KTO sample its `label`; a
    classification sample its class in `category` (the method puts the class id into the last label).
    `reference_logp`, when a method precomputed it, is the summed log-probability of the supervised tokens under
    the frozen reference model. `base_distribution`, on replayed samples with data.replay.target distribution, is
    the base model's next-token distribution at each supervised position (see `data.soft_targets`).
    """

    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False
    dataset: str = ""
    kind: str = "chat"
    label: bool | None = None
    rejected: RenderedSample | None = None
    reference_logp: float | None = None
    category: str | None = None
    base_distribution: BaseDistribution | None = None

    @property
    def total_tokens(self) -> int:
        """Tokens of the sample, the rejected answer of a preference pair included."""
        return len(self.input_ids) + (len(self.rejected.input_ids) if self.rejected is not None else 0)

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def supervised_targets(self) -> int:
        """Positions that predict a supervised token (the labels shifted by one: the first token is never one)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


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


def conversation_text(tokenizer: Any, conversation: Conversation, generation: bool = False) -> str:
    """The text `conversation` trains on (tool calls written as text when the template has no tool support)."""
    messages, tools = _template_inputs(tokenizer, conversation)
    return render_text(tokenizer, messages, tools, generation)


def render_text(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, generation: bool = False) -> str:
    """The chat template's text for `messages` (a thin wrapper so every caller renders the same way)."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise RowError("no chat template", "the tokenizer has no chat template")
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation)
    except TemplateError as err:  # e.g. the template's own raise_exception("roles must alternate ...")
        raise RowError("refused by the chat template", str(err)) from None


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, supervised: set[int] | None = None
) -> tuple[str, list[range]]:
    """The full rendered text and the character ranges each (supervised) assistant turn adds to it."""
    full = render_text(tokenizer, messages, tools)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or (supervised is not None and index not in supervised):
            continue
        before = render_text(tokenizer, messages[:index], tools, generation=True)
        upto = full if index == len(messages) - 1 else render_text(tokenizer, messages[: index + 1], tools)
        if not (full.startswith(before) and full.startswith(upto) and len(upto) >= len(before)):
            raise RowError(
                "template not prefix-stable",
                "the chat template renders earlier turns differently once later turns exist, so the loss mask "
                "cannot be derived from it",
            )
        spans.append(range(len(before), len(upto)))
    return full, spans


def _supervised_turns(conversation: Conversation, options: MaskOptions) -> set[int]:
    """Indexes of the assistant messages that carry the loss."""
    turns = [i for i, m in enumerate(conversation.messages) if m.role == "assistant" and m.weight != 0]
    return set(turns[-1:]) if options.mask_history else set(turns)


def positions_in_spans(offsets: Sequence[tuple[int, int]], spans: list[range]) -> list[int]:
    """Positions of the (non-empty) tokens that start inside one of `spans`."""
    if len(spans) == 1:  # the common case (one supervised turn)
        first, stop = spans[0].start, spans[0].stop
        return [i for i, (start, end) in enumerate(offsets) if first <= start < stop and end > start]
    return [i for i, (start, end) in enumerate(offsets) if end > start and any(start in span for span in spans)]


def _cut(input_ids: list[int], labels: list[int], cutoff_len: int) -> tuple[list[int], list[int], bool]:
    truncated = len(input_ids) > cutoff_len
    return input_ids[:cutoff_len], labels[:cutoff_len], truncated


@dataclass
class _ChatLayout:
    """A chat conversation rendered to text, with the character spans of its supervised assistant turns."""

    conversation: Conversation
    text: str
    spans: list[range]


def _chat_layout(tokenizer: Any, conversation: Conversation, options: MaskOptions) -> _ChatLayout:
    messages, tools = _template_inputs(tokenizer, conversation)
    shift = len(messages) - len(conversation.messages)  # a system message added for tool definitions
    supervised = {index + shift for index in _supervised_turns(conversation, options)}
    text, spans = assistant_spans(tokenizer, messages, tools, supervised)
    return _ChatLayout(conversation, text, spans)


def _encode(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]]]:
    """Token ids and character offsets of each text, in one tokenizer call (a fast tokenizer encodes in parallel).

    A fast tokenizer whose backend is in the state the tokenizer's own call would put it in (no truncation, no
    padding, special tokens split as configured) is asked directly: the same encodings, without building a
    dictionary per text."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if (
        backend is not None
        and getattr(backend, "truncation", True) is None
        and getattr(backend, "padding", True) is None
        and getattr(backend, "encode_special_tokens", None) == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return [(encoding.ids, encoding.offsets) for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True))


def _masked_sample(
    layout: _ChatLayout, ids: list[int], offsets: Sequence[tuple[int, int]], cutoff_len: int, options: MaskOptions
) -> RenderedSample:
    input_ids = list(ids)
    if options.train_on_prompt:
        labels = list(input_ids)
    else:
        labels = [IGNORE_INDEX] * len(input_ids)
        for position in positions_in_spans(offsets, layout.spans):
            labels[position] = input_ids[position]
    input_ids, labels, truncated = _cut(input_ids, labels, cutoff_len)
    if all(label == IGNORE_INDEX for label in labels):
        if truncated:
            raise RowError("all labels masked", f"no assistant token within the first {cutoff_len} tokens")
        raise RowError("all labels masked", "no assistant turn is supervised (all have weight 0)")
    conversation = layout.conversation
    return RenderedSample(
        input_ids,
        labels,
        source=conversation.source,
        truncated=truncated,
        dataset=conversation.dataset,
        kind=conversation.kind,
        label=conversation.label,
    )


def render_conversation(
    tokenizer: Any, conversation: Conversation, cutoff_len: int, options: MaskOptions | None = None
) -> RenderedSample:
    """Tokenize `conversation` with the model's template; labels on assistant turns; cut at `cutoff_len`."""
    options = options or MaskOptions()
    layout = _chat_layout(tokenizer, conversation, options)
    (ids, offsets) = _encode(tokenizer, [layout.text])[0]
    return _masked_sample(layout, ids, offsets, cutoff_len, options)


def render_raw_text(tokenizer: Any, conversation: Conversation, cutoff_len: int) -> RenderedSample:
    """Continued-pretraining text: BOS (when the tokenizer uses one) + text + EOS, every token supervised."""
    text = conversation.text or ""
    if not text.strip():
        raise RowError("empty text", "the text is empty")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    input_ids, labels, truncated = _cut(ids, list(ids), cutoff_len)
    return RenderedSample(
        input_ids, labels, source=conversation.source, truncated=truncated, dataset=conversation.dataset, kind="text"
    )


def render_classification(tokenizer: Any, conversation: Conversation, cutoff_len: int) -> RenderedSample:
    """A text to classify, tokenised as a text-classification pipeline does (the tokenizer's own special tokens,
    no chat template), its class in `category`; no token carries a language-model loss."""
    text = conversation.text or ""
    if not text.strip():
        raise RowError("empty text", "the text is empty")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    input_ids, _, truncated = _cut(ids, ids, cutoff_len)
    return RenderedSample(
        input_ids,
        [IGNORE_INDEX] * len(input_ids),
        source=conversation.source,
        truncated=truncated,
        dataset=conversation.dataset,
        kind="classify",
        category=conversation.category,
    )


def _with_answer(conversation: Conversation, answer: Message) -> Conversation:
    return replace(conversation, messages=[*conversation.messages, answer], chosen=None, rejected=None)


def render_preference(
    tokenizer: Any, conversation: Conversation, cutoff_len: int, options: MaskOptions | None = None
) -> RenderedSample:
    """The prompt + chosen answer, with the prompt + rejected answer in `rejected`; only the answers supervised."""
    answer_only = MaskOptions(train_on_prompt=False, mask_history=True)
    if options is not None and options.train_on_prompt:
        answer_only = options
    assert conversation.chosen is not None and conversation.rejected is not None
    chosen = render_conversation(tokenizer, _with_answer(conversation, conversation.chosen), cutoff_len, answer_only)
    rejected = render_conversation(
        tokenizer, _with_answer(conversation, conversation.rejected), cutoff_len, answer_only
    )
    chosen.kind, rejected.kind = "preference", "preference"
    chosen.rejected = rejected
    chosen.truncated = chosen.truncated or rejected.truncated
    return chosen


def render_sample(
    tokenizer: Any, conversation: Conversation, cutoff_len: int, options: MaskOptions | None = None
) -> RenderedSample:
    """Render any sample kind: chat and KTO conversations, preference pairs, raw text, labelled texts."""
    if conversation.kind == "classify":
        return render_classification(tokenizer, conversation, cutoff_len)
    if conversation.kind == "text":
        return render_raw_text(tokenizer, conversation, cutoff_len)
    if conversation.kind == "preference":
        return render_preference(tokenizer, conversation, cutoff_len, options)
    return render_conversation(tokenizer, conversation, cutoff_len, options)


RenderResult = RenderedSample | Exception


def render_samples(
    tokenizer: Any,
    conversations: list[Conversation],
    cutoff_len: int,
    options: MaskOptions | None = None,
    faults: tuple[type[Exception], ...] = (RowError,),
    chunk: int = 256,
) -> list[RenderResult]:
    """`render_sample` of every conversation, in order: each entry the sample or the fault (one of `faults`) its row
    raised. Chat texts are tokenized `chunk` at a time in one tokenizer call, which a fast tokenizer spreads over
    the cores; the samples equal those of `render_sample`."""
    options = options or MaskOptions()
    results: list[RenderResult | None] = [None] * len(conversations)
    for begin in range(0, len(conversations), chunk):
        layouts: list[tuple[int, _ChatLayout]] = []
        for index in range(begin, min(begin + chunk, len(conversations))):
            conversation = conversations[index]
            try:
                if conversation.kind in ("classify", "text", "preference"):
                    results[index] = render_sample(tokenizer, conversation, cutoff_len, options)
                else:
                    layouts.append((index, _chat_layout(tokenizer, conversation, options)))
            except faults as err:
                results[index] = err
        for (index, layout), encoded in zip(layouts, _encode_each(tokenizer, layouts, faults), strict=True):
            if isinstance(encoded, Exception):
                results[index] = encoded
                continue
            try:
                results[index] = _masked_sample(layout, *encoded, cutoff_len, options)
            except faults as err:
                results[index] = err
    return results  # type: ignore[return-value]  (every index was set above)


def _encode_each(
    tokenizer: Any, layouts: list[tuple[int, _ChatLayout]], faults: tuple[type[Exception], ...]
) -> list[tuple[list[int], Sequence[tuple[int, int]]] | Exception]:
    """Ids and offsets of every layout's text: one call for all, or one per text when the batch fails (so that the
    text at fault is found)."""
    if not layouts:
        return []
    try:
        return list(_encode(tokenizer, [layout.text for _, layout in layouts]))
    except faults:
        pass
    encoded: list[tuple[list[int], Sequence[tuple[int, int]]] | Exception] = []
    for _, layout in layouts:
        try:
            encoded.append(_encode(tokenizer, [layout.text])[0])
        except faults as err:
            encoded.append(err)
    return encoded
