"""What every engine offers the scheduler: prompts to token ids, and token ids for a group of jobs."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneforge.data.messages import Conversation
from tuneforge.data.render import conversation_text
from tuneforge.data.tool_calls import CallPieces, read_call_pieces
from tuneforge.registry import Registry
from tuneforge.serve.text import Completion, TextStream

if TYPE_CHECKING:
    from tuneforge.serve.plan import Plan

__all__ = ["ENGINES", "Engine", "EngineSpec", "HFTokenizerEngine", "Job", "Tokens"]

Tokens = tuple[list[int], bool]
"""The token ids of one generated answer (no end-of-sequence token) and whether the model ended it itself."""


@dataclass(eq=False)
class Job:
    """One request for `n` answers to one prompt, and where its result goes.

    `adapter` is the served name of a LoRA adapter, None for the base model. A job with `emit` set is streamed:
    text pieces go to `emit` as they are made (n is 1 then). `future` receives the list of `n` completions.
    `cancelled` is set when nobody waits for the answer any more: engines stop generating for it.
    """

    prompt: list[int]
    max_tokens: int
    adapter: str | None = None
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()
    ignore_eos: bool = False
    emit: Callable[[str], None] | None = None
    future: Future[list[Completion]] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def abandoned(self) -> bool:
        """True once the job was cancelled: skip it if it waits, stop generating for it if it runs."""
        return self.cancelled.is_set() or self.future.cancelled()

    def cancel(self) -> None:
        """Nobody waits for this job any more (its client went away, the server stops)."""
        self.cancelled.set()
        self.future.cancel()

    def batch_key(self) -> tuple[object, ...] | None:
        """Jobs with equal keys can share one batched generation; None: this job runs alone.

        Streamed jobs run alone, and so do seeded ones, whose seed fixes the random numbers of their whole batch.
        """
        if self.emit is not None or self.seed is not None:
            return None
        sampling = (0.0, 1.0) if self.greedy else (self.temperature, self.top_p)
        return (self.adapter, self.ignore_eos, *sampling)


class Engine(ABC):
    """A loaded model (and its adapters) that turns jobs into completions.

    Subclasses implement tokenisation and token generation; turning tokens into text, with stop strings, is shared
    here so that every engine ends answers the same way. Only the scheduler's thread calls `generate` and `stream`.
    """

    context_length: int
    adapter_names: tuple[str, ...] = ()

    @abstractmethod
    def encode_chat(self, conversation: Conversation) -> list[int]:
        """Token ids of `conversation` rendered with the chat template as in training (tools included), ending with
        the assistant's turn opening."""

    def tool_call_pieces(self) -> CallPieces | None:
        """How this model writes tool calls (its chat template's form, read once); None: answers are not read for
        calls (no tokenizer with a chat template, or calls without a fixed form)."""
        if not hasattr(self, "_tool_call_pieces"):
            tokenizer = getattr(self, "tokenizer", None)
            self._tool_call_pieces = read_call_pieces(tokenizer) if tokenizer is not None else None
        return self._tool_call_pieces

    @abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain prompt (no chat template)."""

    @abstractmethod
    def decode(self, tokens: list[int]) -> str:
        """Text of generated token ids, without special tokens."""

    @abstractmethod
    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        """`n` answers per job, for jobs that share a batch key; at most each job's `max_tokens` tokens."""

    @abstractmethod
    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        """Generate one answer, passing each token to `take` until it returns False, the job is cancelled, or
        `max_tokens` is reached. Returns True when the model ended the answer with an end-of-sequence token."""

    def generate(self, jobs: list[Job]) -> list[list[Completion]]:
        """The completions of each job, in order."""
        return [
            [self._finish(job, tokens, hit_eos) for tokens, hit_eos in answers]
            for job, answers in zip(jobs, self.generate_tokens(jobs), strict=True)
        ]

    def stream(self, job: Job) -> Completion:
        """Generate one answer, sending its text to `job.emit` piece by piece."""
        text = TextStream(self.decode, job.stops, job.emit)
        hit_eos = self.stream_tokens(job, text.add)
        return text.close(hit_eos)

    def _finish(self, job: Job, tokens: list[int], hit_eos: bool) -> Completion:
        text = TextStream(self.decode, job.stops)
        for token in tokens:
            if not text.add(token):
                break
        return text.close(hit_eos)


class HFTokenizerEngine(Engine):
    """An engine whose `tokenizer` is a Hugging Face tokenizer: chat template rendering and decoding shared."""

    tokenizer: Any

    def encode_chat(self, conversation: Conversation) -> list[int]:
        text = conversation_text(self.tokenizer, conversation, generation=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass(frozen=True)
class EngineSpec:
    """One serving engine, as `tuneforge serve --engine NAME` picks it.

    Attributes:
        help: one line for `--help`.
        open: loads a serving plan (base model and adapters) into a ready engine; UserError when it cannot.
        package: the importable module it needs (None: always available).
        install: how to install that package.
        prefers: `--engine auto` picks this engine for a base model it returns True for (when installed).
    """

    help: str
    open: Callable[[Plan], Engine]
    package: str | None = None
    install: str = ""
    prefers: Callable[[str], bool] | None = None


ENGINES: Registry[EngineSpec] = Registry("engine")
