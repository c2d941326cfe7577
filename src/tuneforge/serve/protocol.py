"""OpenAI request and response shapes (the subset tuneforge serves), and OpenAI-style errors.

Request fields outside this subset (penalties, response_format, ...) are ignored; asking for what would silently be
missing from the answer (logprobs, top_logprobs, echo, token-id prompts) is a 400. `tools` and tool
messages are rendered as in training; `tool_choice` is "auto" (the default) or "none" (tools left out, answers not
read for calls): a server cannot force a call, so "required" or a named function is a 400. `ignore_eos` is an extension
(as in vLLM): generate exactly `max_tokens` tokens. Requests are checked here, before any work, so that a bad one is
a 400 naming its field: `seed` is a signed 64-bit integer as in OpenAI's API; text must be valid Unicode (JSON lets
lone surrogates such as "\\ud800" through, which no tokeniser can encode); a completion prompt must not be empty;
`stop` holds at most MAX_STOPS strings, and an empty stop string is ignored (streamed or not).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from tuneforge.data.formats.openai import parse_tool_call
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import Conversation, Message, RowError
from tuneforge.data.tool_calls import CallPieces, split_tool_calls
from tuneforge.serve.text import Completion

__all__ = [
    "MAX_N",
    "MAX_STOPS",
    "SEED_RANGE",
    "ApiError",
    "ChatChunks",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "TextChunks",
    "ToolChatChunks",
    "chat_response",
    "error_body",
    "text_response",
]

MAX_N = 16
MAX_STOPS = 16
SEED_RANGE = (-(2**63), 2**63 - 1)


class ApiError(Exception):
    """An error answered to the client in OpenAI's format with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _unicode(text: str) -> str:
    """`text` if it is valid Unicode; a lone surrogate is a ValueError saying where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"the text holds a lone surrogate (U+{ord(text[err.start]):04X} at character {err.start}), which is "
            "not valid Unicode: send well-formed UTF-8 text"
        ) from None
    return text


def _as_list(value: Any) -> Any:
    """A single string as a list of one (for fields that take a string or a list of strings)."""
    return [value] if isinstance(value, str) else value


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = ""
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(content, str):
            return _unicode(content)
        for part in content or []:
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError('a text content part needs a string "text"')
                _unicode(part["text"])
        return content

    def text(self) -> str:
        """The content as text; of a list of content parts, the text parts joined."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: list[str] | None = Field(None, max_length=MAX_STOPS)
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    ignore_eos: bool = False

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_log_probabilities(cls, asked: bool | int | None) -> bool | int | None:
        if asked:
            raise ValueError("log probabilities are not served: leave logprobs and top_logprobs out")
        return asked

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, stop: Any) -> Any:
        return _as_list(stop)

    @field_validator("stop")
    @classmethod
    def _valid_stops(cls, stops: list[str] | None) -> list[str] | None:
        return [_unicode(stop) for stop in stops] if stops is not None else None

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def stops(self) -> tuple[str, ...]:
        """The stop strings; an empty one is ignored (it would end every answer before it began)."""
        return tuple(stop for stop in self.stop or () if stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_the_model_makes(cls, choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if choice not in (None, "auto", "none"):
            raise ValueError(
                f"{json.dumps(choice)} is not served: the model decides whether to call a tool; "
                'give "auto" (the default) or "none"'
            )
        return choice

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def uses_tools(self) -> bool:
        """True when the prompt lists tools and answers are read for tool calls."""
        return bool(self.tools) and self.tool_choice != "none"

    def conversation(self) -> Conversation:
        """The messages (and tools, unless tool_choice is "none") as the conversation training renders."""
        messages = [_message(m, f"messages.{i}") for i, m in enumerate(self.messages)]
        try:
            tools = parse_tools(self.tools) if self.uses_tools() else None
        except RowError as err:
            raise ApiError(400, err.detail, param="tools") from None
        return Conversation(messages=messages, tools=tools)


def _message(message: ChatMessage, where: str) -> Message:
    role = "system" if message.role == "developer" else message.role
    if message.tool_calls and role != "assistant":
        raise ApiError(400, f"{where}: only assistant messages carry tool_calls", param=f"{where}.tool_calls")
    calls = []
    for index, call in enumerate(message.tool_calls or []):
        try:
            calls.append(parse_tool_call(call, f"{where}.tool_calls.{index}"))
        except RowError as err:
            raise ApiError(400, err.detail, param=f"{where}.tool_calls.{index}") from None
    return Message(role, message.text(), tool_calls=calls or None)


class CompletionRequest(SamplingRequest):
    prompt: list[str] = Field(min_length=1)
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not served: the answer holds the generated text only")
        return echo

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and any(isinstance(item, int | list) for item in prompt):
            raise ValueError("token ids are not served as a prompt: send the text (a string or a list of strings)")
        if not isinstance(prompt, str | list):
            raise ValueError("give the prompt as a string or a list of strings")
        return _as_list(prompt)

    @field_validator("prompt")
    @classmethod
    def _valid_prompts(cls, prompts: list[str]) -> list[str]:
        for index, text in enumerate(prompts):
            where = "the prompt" if len(prompts) == 1 else f"prompt {index}"
            if not text:
                raise ValueError(f"{where} is empty: give the text to continue")
            try:
                _unicode(text)
            except ValueError as err:
                raise ValueError(f"{where}: {err}" if len(prompts) > 1 else str(err)) from None
        return prompts

    def prompts(self) -> list[str]:
        return list(self.prompt)


def _new_id(prefix: str) -> tuple[str, int]:
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


def _usage(prompt_tokens: int, completions: list[Completion]) -> dict[str, int]:
    completion_tokens = sum(c.tokens for c in completions)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(
    model: str, completions: list[Completion], prompt_tokens: int, tool_calls: CallPieces | None = None
) -> dict[str, Any]:
    """A complete `chat.completion` object with one choice per completion; with `tool_calls` (how the model writes
    them), an answer ending in calls has them as `tool_calls` and finish_reason "tool_calls"."""
    ident, created = _new_id("chatcmpl")
    choices = []
    for index, completion in enumerate(completions):
        content, calls = split_tool_calls(completion.text, tool_calls)
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        if calls:
            message = {"role": "assistant", "content": content or None, "tool_calls": _call_objects(calls)}
        finish = "tool_calls" if calls else completion.finish
        choices.append({"index": index, "message": message, "finish_reason": finish})
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completions),
    }


def _call_objects(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's tool call objects; the arguments as JSON text."""
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
        }
        for call in calls
    ]


def text_response(model: str, completions: list[Completion], prompt_tokens: int) -> dict[str, Any]:
    """A complete `text_completion` object with one choice per completion."""
    ident, created = _new_id("cmpl")
    choices = [
        {"index": i, "text": c.text, "finish_reason": c.finish, "logprobs": None} for i, c in enumerate(completions)
    ]
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completions),
    }


class ChatChunks:
    """The `chat.completion.chunk` objects of one streamed chat answer."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.ident, self.created = _new_id("chatcmpl")

    def opening(self) -> list[dict[str, Any]]:
        return [self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]

    def piece(self, text: str) -> dict[str, Any] | None:
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    def closing(self, completion: Completion) -> list[dict[str, Any]]:
        return [self._chunk([{"index": 0, "delta": {}, "finish_reason": completion.finish}])]

    def usage(self, prompt_tokens: int, completion: Completion) -> dict[str, Any]:
        return {**self._chunk([]), "usage": _usage(prompt_tokens, [completion])}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


class ToolChatChunks(ChatChunks):
    """A streamed chat answer that may end in tool calls: text cannot be told from a call before the answer ends,
    so the answer comes in its closing chunks (content, then the calls)."""

    def __init__(self, model: str, tool_calls: CallPieces | None) -> None:
        super().__init__(model)
        self.tool_calls = tool_calls

    def piece(self, text: str) -> dict[str, Any] | None:
        return None

    def closing(self, completion: Completion) -> list[dict[str, Any]]:
        content, calls = split_tool_calls(completion.text, self.tool_calls)
        chunks = [self._chunk([{"index": 0, "delta": {"content": content}, "finish_reason": None}])] if content else []
        if not calls:
            return chunks + super().closing(completion)
        deltas = [{"index": i, **call} for i, call in enumerate(_call_objects(calls))]
        chunks.append(self._chunk([{"index": 0, "delta": {"tool_calls": deltas}, "finish_reason": None}]))
        return [*chunks, self._chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])]


class TextChunks(ChatChunks):
    """The `text_completion` objects of one streamed text completion."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.ident, self.created = _new_id("cmpl")

    def opening(self) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str) -> dict[str, Any] | None:
        return self._chunk([{"index": 0, "text": text, "finish_reason": None, "logprobs": None}])

    def closing(self, completion: Completion) -> list[dict[str, Any]]:
        return [self._chunk([{"index": 0, "text": "", "finish_reason": completion.finish, "logprobs": None}])]

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
