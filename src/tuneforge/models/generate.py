"""Batched greedy generation with the model's chat template (used by replay, comparison and chat)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.render import render_text

__all__ = ["Reply", "generate_replies", "stop_token_ids"]


@dataclass
class Reply:
    """A generated answer and whether the model ended it itself (False: cut at max_new_tokens)."""

    text: str
    finished: bool


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the generation config's eos ids plus the tokenizer's eos."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        for item in value if isinstance(value, list) else [value]:
            if item is not None and item not in ids:
                ids.append(int(item))
    return ids


@torch.inference_mode()
def _generate_batch(model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int) -> list[Reply]:
    stops = stop_token_ids(model, tokenizer)
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    output = model.generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )
    replies = []
    for row in output[:, encoded["input_ids"].shape[1] :].tolist():
        finished = any(token in stops for token in row)
        if finished:
            row = row[: next(i for i, token in enumerate(row) if token in stops)]
        replies.append(Reply(tokenizer.decode(row, skip_special_tokens=True).strip(), finished))
    return replies


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    max_new_tokens: int,
    batch_size: int = 8,
    description: str | None = None,
) -> list[Reply]:
    """Greedy answers to each conversation (list of role/content dicts), in input order, with a progress bar."""
    from tuneforge.train.progress import progress_bar

    texts = [render_text(tokenizer, c, generation=True) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: list[Reply | None] = [None] * len(texts)
    was_training = model.training
    model.eval()
    with progress_bar(description or "generating", total=len(texts)) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for index, reply in zip(
                chunk, _generate_batch(model, tokenizer, [texts[i] for i in chunk], max_new_tokens), strict=True
            ):
                replies[index] = reply
            advance(len(chunk))
    model.train(was_training)
    return [r for r in replies if r is not None]
