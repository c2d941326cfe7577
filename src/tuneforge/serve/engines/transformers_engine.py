"""The default engine: plain transformers generation, one request at a time, streaming through a thread."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.render import render_text
from tuneforge.models.generate import stop_token_ids

__all__ = ["Generation", "TransformersEngine"]


@dataclass
class Generation:
    """Settings of one request."""

    messages: list[dict[str, str]]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stops: tuple[str, ...] = ()
    seed: int | None = None


class TransformersEngine:
    """Serves one loaded model; a lock keeps generations from interleaving on the same weights."""

    def __init__(self, model: Any, tokenizer: Any, context_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self._lock = threading.Lock()

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the rendered prompt (with the generation prompt)."""
        text = render_text(self.tokenizer, messages, generation=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def stream(self, request: Generation, prompt: list[int]) -> Iterator[str]:
        """Yield text pieces as they are generated; stop strings end the answer early."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature > 0:
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
        inputs = torch.tensor([prompt], device=self.model.device)
        kwargs = {
            "input_ids": inputs,
            "attention_mask": torch.ones_like(inputs),
            "max_new_tokens": request.max_new_tokens,
            "streamer": streamer,
            "eos_token_id": stop_token_ids(self.model, self.tokenizer),
            "pad_token_id": self.tokenizer.pad_token_id,
            **sampling,
        }

        def work() -> None:
            with torch.inference_mode():
                if request.seed is not None:
                    torch.manual_seed(request.seed)
                self.model.generate(**kwargs)

        with self._lock:
            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            exhausted = yield from _cut_at_stops(streamer, request.stops)
            if not exhausted:  # a stop string ended the answer: drain so the worker can finish
                for _ in streamer:
                    pass
            worker.join()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_at_stops(pieces: Iterator[str], stops: tuple[str, ...]) -> Generator[str, None, bool]:
    """Pass text through until a stop string appears; hold back text that could be the start of one.

    Returns True when `pieces` was read to its end, False when a stop string cut it short.
    """
    if not stops:
        yield from pieces
        return True
    pending = ""
    hold = max(len(s) for s in stops) - 1
    for piece in pieces:
        pending += piece
        hits = [pending.find(s) for s in stops if s in pending]
        if hits:
            yield pending[: min(hits)]
            return False
        if len(pending) > hold:
            cut = len(pending) - hold
            yield pending[:cut]
            pending = pending[cut:]
    yield pending
    return True
