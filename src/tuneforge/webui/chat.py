"""Chat with a model or a run from the page: models loaded once in the server, answers streamed.

For a run, "base" is the model it was tuned from: its adapter switched off (peft adapters, no second copy), or
the base model loaded beside it (full and freeze fine-tuning). Generation uses the model's own chat template,
greedy at temperature 0, exactly as `tuneforge chat` does.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.data.render import render_text
from tuneforge.errors import UserError
from tuneforge.models.adapters import adapter_disabled, adapter_of
from tuneforge.models.generate import generate_new_tokens, stop_token_ids
from tuneforge.models.load import LoadedModel, load_model
from tuneforge.models.rundir import is_run_dir, read_run_record

__all__ = ["ChatModels", "stream_answer"]


class ChatModels:
    """The models the chat tab loaded (the last `keep` of them), each with a lock: one answer at a time."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.models: collections.OrderedDict[tuple[str, bool], LoadedModel] = collections.OrderedDict()
        self.locks: dict[int, threading.Lock] = {}
        self.lock = threading.Lock()

    def get(self, source: str, trust_remote_code: bool = False) -> LoadedModel:
        """The loaded model of `source` (a checked path or zoo name), loading it on first use."""
        key = (source, trust_remote_code)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            loaded = load_model(source, trust_remote_code=trust_remote_code)
            self.models[key] = loaded
            self.locks[id(loaded.model)] = threading.Lock()
            while len(self.models) > self.keep:
                _, old = self.models.popitem(last=False)
                self.locks.pop(id(old.model), None)
            return loaded

    def lock_for(self, loaded: LoadedModel) -> threading.Lock:
        """The lock that serialises generation on `loaded`'s model."""
        with self.lock:
            return self.locks.setdefault(id(loaded.model), threading.Lock())

    def base_of(self, run: str, trust_remote_code: bool = False) -> tuple[LoadedModel, bool]:
        """The base model of run directory `run`: (the run's model, True) when its adapter can be switched off,
        else (the base model loaded on its own, False)."""
        if not is_run_dir(run):
            raise UserError(f"{run} is not a run directory: side by side compares a run with its base model")
        tuned = self.get(run, trust_remote_code)
        spec = adapter_of(tuned.model)
        if spec is not None and spec.can_disable and hasattr(tuned.model, "disable_adapter"):
            return tuned, True
        base = read_run_record(Path(run)).base_model
        return self.get(base, trust_remote_code), False


def stream_answer(
    loaded: LoadedModel,
    lock: threading.Lock,
    messages: list[dict[str, str]],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    adapter_off: bool = False,
) -> Iterator[str]:
    """Yield the growing answer to `messages`; `adapter_off` answers with the run's adapter switched off."""
    import torch
    from transformers import TextIteratorStreamer

    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = render_text(tokenizer, messages, generation=True)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    )
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with lock, torch.inference_mode(), adapter_disabled(model) if adapter_off else contextlib.nullcontext():
                generate_new_tokens(
                    model, inputs["input_ids"], inputs["attention_mask"], max_new_tokens=max_new_tokens,
                    streamer=streamer, eos_token_id=stop_token_ids(model, tokenizer),
                    pad_token_id=tokenizer.pad_token_id, **sampling,
                )  # fmt: skip
        except BaseException as err:  # surfaced in the page, not lost in a thread
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    answer = ""
    for piece in streamer:
        answer += piece
        yield answer
    worker.join()
    if failure:
        raise UserError(f"generation failed: {failure[0]}") from None
    yield answer.strip()
