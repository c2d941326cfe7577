"""A judge model decides which of two answers is better: any model tuneforge loads, or an OpenAI-compatible endpoint.

Each question is judged twice with the answers swapped, so a judge that always prefers the first (or second)
position cannot make up a result: the tuned answer wins only when preferred in both orders, loses only when the
base answer is preferred in both, and ties otherwise.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tuneforge.errors import UserError

__all__ = ["combine", "judge_prompt", "make_judge", "parse_choice"]

_CHOICE = re.compile(r"\b(A|B|TIE)\b", re.IGNORECASE)

Ask = Callable[[list[str]], list[str]]


def judge_prompt(question: str, first: str, second: str, reference: str | None = None) -> str:
    """The instruction given to the judge for one ordered pair of answers."""
    parts = [
        "You are judging two answers to the same question. Prefer the answer that is correct, helpful and "
        "follows the question; ignore length and style otherwise.",
        f"Question: {question}",
    ]
    if reference:
        parts.append(f"Reference answer: {reference}")
    parts += [f"Answer A: {first}", f"Answer B: {second}", "Which answer is better? Reply with exactly A, B or TIE."]
    return "\n\n".join(parts)


def parse_choice(reply: str) -> str:
    """'A', 'B' or 'TIE' from the judge's reply (the first one it names); anything else counts as a tie."""
    found = _CHOICE.search(reply.strip().splitlines()[0] if reply.strip() else "")
    return found.group(1).upper() if found else "TIE"


def combine(after_first: str, after_second: str) -> str:
    """The tuned answer's outcome from the two orders: (tuned as A, base as B) and (base as A, tuned as B)."""
    tuned_wins = (after_first == "A") + (after_second == "B")
    base_wins = (after_first == "B") + (after_second == "A")
    if tuned_wins == 2:
        return "win"
    if base_wins == 2:
        return "loss"
    return "tie"


def verdicts(ask: Ask, questions: list[Any], before: list[str], after: list[str]) -> list[str]:
    """win/tie/loss for the tuned answers, judged in both orders."""
    prompts = []
    for question, base, tuned in zip(questions, before, after, strict=True):
        prompts.append(judge_prompt(question.question, tuned, base, question.reference))
        prompts.append(judge_prompt(question.question, base, tuned, question.reference))
    choices = [parse_choice(reply) for reply in ask(prompts)]
    return [combine(choices[i], choices[i + 1]) for i in range(0, len(choices), 2)]


def _local_asker(name_or_path: str) -> Ask:
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    loaded = load_model(name_or_path)

    def ask(prompts: list[str]) -> list[str]:
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        replies = generate_replies(loaded.model, loaded.tokenizer, conversations, 8, description="judging")
        return [r.text for r in replies]

    return ask


def _endpoint_asker(url: str, model: str, api_key: str | None) -> Ask:
    endpoint = url.rstrip("/") + ("/chat/completions" if url.rstrip("/").endswith("/v1") else "/v1/chat/completions")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def one(prompt: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8}
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"] or ""
        except (urllib.error.URLError, KeyError, json.JSONDecodeError, TimeoutError) as err:
            raise UserError(f"judge endpoint {endpoint} failed: {err}; check eval.judge and the server") from None

    return lambda prompts: [one(p) for p in prompts]


def make_judge(judge: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> Ask:
    """A function answering judge prompts: an http(s) URL is an OpenAI-compatible endpoint, anything else a model."""
    if judge.startswith(("http://", "https://")):
        if not model:
            raise UserError("eval.judge is an endpoint: set eval.judge_model to the model id it serves")
        return _endpoint_asker(judge, model, os.environ.get(api_key_env))
    return _local_asker(judge)
