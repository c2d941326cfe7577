"""Batched greedy (or sampled) generation with the model's chat template (used by replay, comparison and chat)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.render import render_text
from tuneforge.models.adapters import adapter_of
from tuneforge.progress import progress_bar

__all__ = ["Reply", "generate_new_tokens", "generate_replies", "generation_batch_size", "stop_token_ids"]

# A generation batch holds at most this many prompt + answer tokens (its cache: about 2 GB for a 7B model in bf16),
# and at most MAX_GENERATION_BATCH answers. On CPU a batch of 32 short answers took half the time of 4 batches of 8.
GENERATION_TOKENS_PER_BATCH = 4096
MAX_GENERATION_BATCH = 32
# Sampled answers depend on how prompts are batched (each batch draws from `seed` + its first index): they keep
# batches of 8, so that a seed gives the answers it always gave (the self-replay answers the demo was measured with).
SAMPLING_BATCH = 8


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


def _virtual_tokens(model: Any) -> str | None:
    """Where the model's adapter keeps virtual tokens ("inputs", "cache"), or None (see AdapterSpec)."""
    adapter = adapter_of(model)
    return adapter.virtual_tokens if adapter is not None else None


def _with_virtual_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
    """generate() inputs for the base model of a prompt-learning model, its virtual tokens in front.

    Placeholder ids stand for the virtual tokens, so that the cache, attention mask and position ids (counted from
    the mask, left padding included) are laid out exactly as in training. Prefix tuning supplies them as a
    pre-filled cache; prompt and P-tuning as input embeddings.
    """
    batch, count = input_ids.shape[0], model.active_peft_config.num_virtual_tokens
    placeholders = input_ids.new_zeros((batch, count))
    inputs: dict[str, Any] = {
        "input_ids": torch.cat([placeholders, input_ids], dim=1),
        "attention_mask": torch.cat([attention_mask.new_ones((batch, count)), attention_mask], dim=1),
    }
    if _virtual_tokens(model) == "cache":
        inputs["cache"] = model.get_prompt(batch)
    else:
        embeds = model.word_embeddings(input_ids)
        inputs["inputs_embeds"] = torch.cat([model.get_prompt(batch).to(embeds.dtype), embeds], dim=1)
    return inputs


def generate_new_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
    """`model.generate(...)` returning only the new tokens; works for every adapter, prompt learning included.

    peft's own generate for prompt-learning models does not follow the transformers 5 generation loop (cache
    positions go wrong), so those models generate through their base model here. `kwargs` go to generate()
    (a streamer sees the prompt first, as usual).
    """
    if _virtual_tokens(model) is None:
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return output[:, input_ids.shape[1] :]
    inputs = _with_virtual_tokens(model, input_ids, attention_mask)
    output = model.get_base_model().generate(**inputs, **kwargs)
    return output[:, inputs["input_ids"].shape[1] :]


@torch.inference_mode()
def _generate_batch(
    model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int, temperature: float = 0.0
) -> list[Reply]:
    stops = stop_token_ids(model, tokenizer)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    new_tokens = generate_new_tokens(
        model,
        encoded["input_ids"],
        encoded["attention_mask"],
        max_new_tokens=max_new_tokens,
        eos_token_id=stops,
        **sampling,
        pad_token_id=tokenizer.pad_token_id,
    )
    replies = []
    for row in new_tokens.tolist():
        finished = any(token in stops for token in row)
        if finished:
            row = row[: next(i for i, token in enumerate(row) if token in stops)]
        replies.append(Reply(tokenizer.decode(row, skip_special_tokens=True).strip(), finished))
    return replies


def generation_batch_size(prompt_tokens: list[int], max_new_tokens: int) -> int:
    """How many answers to generate at once: as many as fit the token budget with the longest prompt, up to 32."""
    longest = max(prompt_tokens, default=0) + max_new_tokens
    return max(1, min(MAX_GENERATION_BATCH, GENERATION_TOKENS_PER_BATCH // max(longest, 1)))


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    max_new_tokens: int,
    batch_size: int | None = None,
    description: str | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[Reply]:
    """Answers to each conversation (list of role/content dicts), in input order, with a progress bar.

    Greedy by default; with a `temperature` above 0 each answer is sampled from the model's distribution at that
    temperature (no top-k or top-p cut), reproducibly from `seed` (and `batch_size`) without touching the global
    random state. `batch_size` None: `generation_batch_size` of the prompts when greedy, SAMPLING_BATCH when sampled.
    """
    texts = [render_text(tokenizer, c, generation=True) for c in conversations]
    if batch_size is None and temperature > 0:
        batch_size = SAMPLING_BATCH
    elif batch_size is None:
        prompt_tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
        batch_size = generation_batch_size(prompt_tokens, max_new_tokens)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: list[Reply | None] = [None] * len(texts)
    was_training = model.training
    model.eval()
    with progress_bar(description or "generating", total=len(texts)) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = [texts[i] for i in chunk]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + start)
                generated = _generate_batch(model, tokenizer, batch, max_new_tokens, temperature)
            for index, reply in zip(chunk, generated, strict=True):
                replies[index] = reply
            advance(len(chunk))
    model.train(was_training)
    return [r for r in replies if r is not None]
