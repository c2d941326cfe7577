"""OpenAI request and response shapes (the subset tuneforge serves), and OpenAI-style errors.

Request fields outside this subset (logprobs, penalties, tools, ...) are ignored. `ignore_eos` is an extension
(as in vLLM): generate exactly `max_tokens` tokens.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from tuneforge.serve.text import Completion

__all__ = [
    "MAX_N",
    "ApiError",
    "ChatChunks",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "TextChunks",
    "chat_response",
    "error_body",
    "text_response",
]

MAX_N = 16


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


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = ""

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
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def template_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def _new_id(prefix: str) -> tuple[str, int]:
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


def _usage(prompt_tokens: int, completions: list[Completion]) -> dict[str, int]:
    completion_tokens = sum(c.tokens for c in completions)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(model: str, completions: list[Completion], prompt_tokens: int) -> dict[str, Any]:
    """A complete `chat.completion` object with one choice per completion."""
    ident, created = _new_id("chatcmpl")
    choices = [
        {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish}
        for i, c in enumerate(completions)
    ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completions),
    }


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

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    def closing(self, completion: Completion) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {}, "finish_reason": completion.finish}])

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


class TextChunks(ChatChunks):
    """The `text_completion` objects of one streamed text completion."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.ident, self.created = _new_id("cmpl")

    def opening(self) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "text": text, "finish_reason": None, "logprobs": None}])

    def closing(self, completion: Completion) -> dict[str, Any]:
        return self._chunk([{"index": 0, "text": "", "finish_reason": completion.finish, "logprobs": None}])

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
