"""llama.cpp behind the engine interface: an optional engine for GGUF files, used when `llama-cpp-python` is
installed. It runs one answer at a time (a batch is run answer by answer) and serves no LoRA adapters.

The chat template comes from the GGUF file through transformers, so prompts render as everywhere in tuneforge.
Sampling is what the other engines do: temperature and top-p only (llama-cpp-python's own defaults add top-k 40 and
min-p 0.05); temperature 0 is greedy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tuneforge.data.messages import Conversation
from tuneforge.data.render import conversation_text
from tuneforge.errors import UserError
from tuneforge.serve.engines.base import ENGINES, Engine, EngineSpec, Job, Tokens
from tuneforge.serve.plan import Plan, gguf_file

__all__ = ["LlamaCppEngine", "open_llamacpp"]


class LlamaCppEngine(Engine):
    """A GGUF file loaded by llama-cpp-python with the context length stored in the file."""

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama
        from transformers import AutoTokenizer

        # llama-cpp-python uses half the cores by default; the scheduler runs one answer at a time, so use them all
        self.llm = Llama(model_path=str(gguf), n_ctx=0, n_threads=os.cpu_count() or 1, verbose=False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.context_length = int(self.llm.n_ctx())
        self._eos = {self.llm.token_eos(), self.tokenizer.eos_token_id}

    def encode_chat(self, conversation: Conversation) -> list[int]:
        text = conversation_text(self.tokenizer, conversation, generation=True)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def encode_text(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def decode(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        answers = []
        for job in jobs:
            self._seed(job)
            answers.append([self._answer(job, None) for _ in range(job.n)])
        return answers

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        self._seed(job)
        return self._answer(job, take)[1]

    def _seed(self, job: Job) -> None:
        if job.seed is not None:
            self.llm.set_seed(job.seed & 0xFFFFFFFF)  # llama.cpp seeds are 32-bit; requests allow 64-bit ones

    def _answer(self, job: Job, take: Callable[[int], bool] | None) -> Tokens:
        """Sample one answer token by token (temperature 0: greedy)."""
        tokens: list[int] = []
        sampling = {"temp": job.temperature, "top_p": job.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
        for token in self.llm.generate(job.prompt, reset=True, **sampling):
            if token in self._eos and not job.ignore_eos:
                return tokens, True
            tokens.append(token)
            if take is not None and not take(token):  # before the length check: a stream gets its last token too
                break
            if len(tokens) >= job.max_tokens or job.cancelled.is_set():
                break
        return tokens, False


def open_llamacpp(plan: Plan) -> Engine:
    """The plan's GGUF file in llama.cpp (no adapters: merge them into a GGUF file first)."""
    if plan.adapters:
        raise UserError("--engine llamacpp serves no LoRA adapters: merge the adapter into a GGUF file first")
    return LlamaCppEngine(gguf_file(plan.base))


ENGINES.register("llamacpp")(
    EngineSpec(
        help="llama.cpp for .gguf files (picked by --engine auto for them when installed)",
        open=open_llamacpp,
        package="llama_cpp",
        install="pip install llama-cpp-python",
        prefers=lambda base: base.endswith(".gguf"),
    )
)
