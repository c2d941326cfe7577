"""Self-replay: the base model's own answers to general prompts, mixed into training against forgetting.

Generated once per (model, prompts, settings) and cached as OpenAI-messages JSONL under $TUNEFORGE_HOME/replay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_write_text
from tuneforge.data.catalog import resolve_file
from tuneforge.data.messages import Conversation, Message
from tuneforge.data.quality import DataReport
from tuneforge.errors import UserError

__all__ = ["REPLAY_DATASET", "load_replay_prompts", "replay_conversations", "trim_to_sentence"]

log = logging.getLogger(__name__)

REPLAY_DATASET = "self-replay"  # the dataset name replayed rows carry

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]|\n")


def trim_to_sentence(text: str) -> str:
    """Cut an unfinished answer after its last complete sentence ('' when there is none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def load_replay_prompts(entry: str, limit: int | None, base_dir: Path | None) -> list[str]:
    """The replay prompts of `entry` (a bundled name or a JSON list of strings), the first `limit` of them."""
    path = resolve_file(entry, base_dir)
    prompts = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise UserError(f"{path}: replay prompts must be a JSON list of strings")
    return prompts[:limit] if limit else prompts


def _fingerprint(
    model: Any, tokenizer: Any, model_id: str, prompts: list[str], max_new_tokens: int, temperature: float
) -> str:
    weights = model.get_input_embeddings().weight[:16].detach().float().cpu().numpy().tobytes()
    digest = hashlib.sha256()
    sampled = [f"temperature={temperature:g}"] if temperature > 0 else []  # greedy answers keep their old key
    for part in (model_id, tokenizer.chat_template or "", json.dumps(prompts), str(max_new_tokens), *sampled):
        digest.update(part.encode("utf-8"))
    digest.update(weights)
    return digest.hexdigest()[:16]


def _generate(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, trim: bool, temperature: float
) -> list[dict[str, Any]]:
    from tuneforge.models.generate import generate_replies

    replies = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": p}] for p in prompts],
        max_new_tokens,
        description="self-replay answers (once)",
        temperature=temperature,
    )
    rows = []
    for prompt, reply in zip(prompts, replies, strict=True):
        answer = reply.text if reply.finished or not trim else trim_to_sentence(reply.text)
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    return rows


def replay_conversations(
    model: Any,
    tokenizer: Any,
    model_id: str,
    prompts_entry: str,
    max_new_tokens: int,
    limit: int | None,
    report: DataReport,
    cache_dir: Path,
    base_dir: Path | None = None,
    trim: bool = True,
    temperature: float = 0.0,
    answers: int = 1,
) -> list[Conversation]:
    """The base model's answers to the replay prompts as conversations (empty answers counted as dropped).

    Greedy answers (`temperature` 0) are the model's most likely answers; sampled ones (temperature 1) follow its
    whole distribution. Training on greedy answers sharpens the model towards them, which makes other good text
    (human-written answers) less likely; training on samples keeps the distribution where it was.

    With `trim` an answer cut at `max_new_tokens` is cut back to its last complete sentence (it is trained on);
    without, it is kept as generated (e.g. to measure what the model does, as EWC's Fisher estimate does).
    With `answers` above 1 every prompt is answered that many times (sampled answers differ).
    """
    prompts = load_replay_prompts(prompts_entry, limit, base_dir) * answers  # repeats fall in other batches: new draws
    key = _fingerprint(model, tokenizer, model_id, prompts, max_new_tokens, temperature) + (
        "" if trim else "-untrimmed"
    )
    cache = cache_dir / f"{key}.jsonl"
    if cache.is_file():
        rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").split("\n") if line.strip()]
        log.info("self-replay: reusing %d cached answers from %s", len(rows), cache)
    else:
        rows = _generate(model, tokenizer, prompts, max_new_tokens, trim, temperature)
        atomic_write_text(cache, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    conversations = []
    for line, row in enumerate(rows, start=1):
        report.total += 1
        where = f"{cache}:{line}"
        messages = [Message(m["role"], m["content"]) for m in row["messages"]]
        if trim and not messages[-1].content.strip():  # untrimmed, an empty answer is still what the model does
            report.drop(where, "empty answer", "the base model gave no complete sentence to replay")
            continue
        conversations.append(Conversation(messages, source=where, dataset=REPLAY_DATASET))
    return conversations
