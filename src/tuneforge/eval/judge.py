"""A judge model decides which of two answers is better: any model tuneforge loads, or an OpenAI-compatible endpoint.

Each question is judged twice with the answers swapped, so a judge that always prefers the first (or second)
position cannot make up a result: the tuned answer wins only when preferred in both orders, loses only when the
base answer is preferred in both, and ties otherwise.

An endpoint's API key comes only from TUNEFORGE_JUDGE_API_KEY and goes only to an endpoint named on the command
line or in TUNEFORGE_JUDGE_URL (see judge_endpoint.py for the rest of the rules).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from tuneforge.errors import UserError
from tuneforge.eval.judge_endpoint import KEY_ENV, URL_ENV, check_endpoint_url, endpoint_asker, looks_like_url
from tuneforge.progress import console

__all__ = [
    "CONFIG_ORIGIN",
    "JudgeChoice",
    "check_judge",
    "choose_judge",
    "combine",
    "judge_prompt",
    "make_judge",
    "parse_choice",
    "verdicts",
]

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


CONFIG_ORIGIN = "eval.judge"


@dataclass(frozen=True)
class JudgeChoice:
    """Which judge to use and where that choice came from: "--judge", TUNEFORGE_JUDGE_URL or "eval.judge"."""

    target: str
    origin: str

    @property
    def trusted(self) -> bool:
        """Whether an endpoint chosen here may receive the API key: never when only a config file named it."""
        return self.origin != CONFIG_ORIGIN

    @property
    def is_endpoint(self) -> bool:
        return looks_like_url(self.target)


def choose_judge(command_line: str | None, config: str | None) -> JudgeChoice | None:
    """The judge in force: `--judge`, else TUNEFORGE_JUDGE_URL, else the config's eval.judge; None when no judge."""
    if command_line:
        return JudgeChoice(command_line, "--judge")
    if os.environ.get(URL_ENV):
        return JudgeChoice(os.environ[URL_ENV], URL_ENV)
    return JudgeChoice(config, CONFIG_ORIGIN) if config else None


def check_judge(choice: JudgeChoice, model: str | None, allow_remote: bool) -> bool:
    """Refuse a judge endpoint that may not be called (scheme, remote host, no model id), before any work is done.

    Returns whether the endpoint is on this machine (True for a model judge, which runs here).
    """
    if not choice.is_endpoint:
        return True
    loopback = check_endpoint_url(choice.target, allow_remote, choice.origin)
    if not model:
        raise UserError(
            f"{choice.origin}: the judge is an endpoint: set eval.judge_model (or --judge-model) to the model id "
            "it serves"
        )
    return loopback


def make_judge(choice: JudgeChoice, model: str | None = None, allow_remote: bool = False) -> Ask:
    """A function answering judge prompts: an http(s) URL is an OpenAI-compatible endpoint, anything else a model.

    The endpoint gets TUNEFORGE_JUDGE_API_KEY only when the choice is trusted (command line or TUNEFORGE_JUDGE_URL).
    """
    loopback = check_judge(choice, model, allow_remote)
    if not choice.is_endpoint:
        return _local_asker(choice.target)
    assert model is not None  # check_judge refused an endpoint without a model id
    api_key = os.environ.get(KEY_ENV) or None
    if api_key and not choice.trusted:
        console.print(
            f"[yellow]note[/]: {KEY_ENV} is set but not sent to {escape(choice.target)}: that URL comes only from the "
            f"config file ({CONFIG_ORIGIN}); name it with --judge or {URL_ENV} to send the key",
            highlight=False,
        )
        api_key = None
    return endpoint_asker(choice.target, model, api_key, loopback)
