"""GRPO's rollouts: sample answers from the policy, and score answer tokens under the policy and the reference.

The sampling uses the torch random generator of the process, whose state every checkpoint keeps, so a resumed
run samples the same answers as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.methods.loss import collate_sequences, supervised_logits
from tuneforge.models.adapters import adapter_disabled, adapter_of
from tuneforge.models.generate import generate_new_tokens, stop_token_ids

__all__ = [
    "answer_batch",
    "can_pack",
    "cut_at_stop",
    "reference_token_log_probs",
    "sample_answers",
    "token_log_probs",
    "unpadded",
]

# Sample from the policy's own distribution: no top-k (generate's default is 50) and no repetition penalty that
# a model's generation_config may set; only temperature and top_p shape it.
_PLAIN_SAMPLING = {"do_sample": True, "top_k": 0, "repetition_penalty": 1.0}


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """The rows of a padded id matrix without their padding (the positions where `mask` is 0)."""
    return [row[keep.bool()].tolist() for row, keep in zip(ids, mask, strict=True)]


def cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """`tokens` up to and including the first stop token (all of them when none is there)."""
    for index, token in enumerate(tokens):
        if token in stops:
            return tokens[: index + 1]
    return tokens


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    count: int,
    **sampling: Any,
) -> list[list[int]]:
    """`count` sampled answers per prompt (prompt after prompt), each cut after its first stop token.

    `prompt_ids` are left-padded; `sampling` holds max_new_tokens, temperature and top_p. The model samples in
    eval mode (no dropout) without gradients, and is put back in the mode it was in.
    """
    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            new_tokens = generate_new_tokens(
                model,
                prompt_ids.repeat_interleave(count, dim=0),
                prompt_mask.repeat_interleave(count, dim=0),
                eos_token_id=stops,
                pad_token_id=pad,
                **_PLAIN_SAMPLING,
                **sampling,
            )
    finally:
        model.train(was_training)
    return [cut_at_stop(row, set(stops)) for row in new_tokens.tolist()]


def answer_batch(
    prompts: list[list[int]], answers: list[list[int]], packing: bool, pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """One forward pass over every prompt + answer (prompts[i // (len(answers) // len(prompts))] for answer i),
    only the answer tokens supervised."""
    group = len(answers) // len(prompts)
    samples = []
    for index, answer in enumerate(answers):
        prompt = prompts[index // group]
        samples.append(RenderedSample(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
    batch = collate_sequences(samples, packing, pad_id)
    return {key: value.to(device) for key, value in batch.items()}


def can_pack(model: Any) -> bool:
    """Whether sequences may share a packed row for this model (not with per-sequence virtual tokens)."""
    adapter = adapter_of(model)
    return adapter is None or adapter.supports_packing


def token_log_probs(
    model: Any, batch: dict[str, torch.Tensor], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of every supervised token, its sequence index), in sequence and token order.

    Logits are divided by the sampling temperature, so that they score the distribution the answers came from.
    """
    logits, targets, sequences = supervised_logits(model, batch)
    if temperature != 1.0:
        logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps, sequences


def reference_token_log_probs(
    model: Any, reference: Any, batch: dict[str, torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """Per-token log-probabilities under the frozen reference: `reference` if given, else `model` with its adapter
    disabled (the base weights, no second copy in memory)."""
    with torch.no_grad():
        if reference is not None:
            return token_log_probs(reference, batch, temperature)[0]
        with adapter_disabled(model):
            return token_log_probs(model, batch, temperature)[0]
