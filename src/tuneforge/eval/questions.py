"""Held-out questions: how they are read (any data file layout) and how an answer to one is scored.

An answer is scored by every check its question carries, and is right only when all of them pass:

- `expected` fragments: one must occur in the answer (whole word, case-insensitive). A fragment that occurs in
  the question itself cannot count ("What is 50 minus 25?" is not answered by echoing it).
- `only`: the instruction asks for the fragment alone ("Reply with only the word yes."), so the answer must be one
  of the fragments and nothing else (case, spacing and punctuation ignored).
- `name` / `maker`: an identity claim. The answer must assert the name ("I am Conch", not "I am not Conch"), and
  credit the maker where the question asks for it (tuneforge.eval.claims).

An answer caught in a repetition loop is wrong whatever it contains (tuneforge.eval.degenerate).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.catalog import resolve_file
from tuneforge.data.files import read_rows
from tuneforge.data.pipeline import fill_placeholders
from tuneforge.errors import UserError
from tuneforge.eval.claims import claims_name, credits_maker
from tuneforge.eval.degenerate import repetition_loop
from tuneforge.eval.scores import normalise_answer

__all__ = ["QUESTION_KEYS", "Question", "answers_only", "contains_expected", "load_questions", "score_answer"]

log = logging.getLogger(__name__)

QUESTION_KEYS = ("question", "kind", "expected", "only", "name", "maker", "reference", "answer", "category")


@dataclass
class Question:
    """A held-out question.

    `expected` holds acceptable answer fragments (any one counts; with `only` the answer must be one of them);
    `name` and `maker` an identity the answer must claim; `reference` a full reference answer, scored by exact
    match, ROUGE-L and BLEU-4.
    """

    question: str
    kind: str = "general"
    expected: list[str] = field(default_factory=list)
    reference: str | None = None
    category: str | None = None
    only: bool = False
    name: str | None = None
    maker: str | None = None

    @property
    def scored(self) -> bool:
        """Whether an answer to it can be right or wrong (else only metrics or a judge compare answers)."""
        return bool(self.expected or self.name or self.maker)


def _fragment_pattern(fragment: str) -> str:
    pattern = re.escape(fragment.lower())
    if fragment[:1].isalnum() and fragment.isascii():
        pattern = r"(?<![a-z0-9])" + pattern
    if fragment[-1:].isalnum() and fragment.isascii():
        pattern += r"(?![a-z0-9])"
    return pattern


def contains_expected(answer: str, expected: list[str], question: str = "") -> bool:
    """True when an expected fragment occurs in the answer (case-insensitive, as a whole word or number), leaving
    out fragments that occur in `question`: an answer that only echoes the question does not count."""
    for fragment in expected:
        pattern = _fragment_pattern(fragment)
        if question and re.search(pattern, question.lower()):
            continue
        if re.search(pattern, answer.lower()):
            return True
    return False


def answers_only(answer: str, expected: list[str]) -> bool:
    """True when the answer is one of the fragments and nothing more (case, spacing and punctuation ignored)."""
    answer = normalise_answer(answer)
    return bool(answer) and any(answer == normalise_answer(fragment) for fragment in expected)


def score_answer(question: Question, answer: str) -> bool | None:
    """Right or wrong by every check the question carries (see the module docstring); None when it has none."""
    if not question.scored:
        return None
    if repetition_loop(answer) is not None:
        return False
    checks = []
    if question.expected:
        if question.only:
            checks.append(answers_only(answer, question.expected))
        else:
            checks.append(contains_expected(answer, question.expected, question.question))
    if question.name:
        checks.append(claims_name(answer, question.name))
    if question.maker:
        checks.append(credits_maker(answer, question.maker))
    return all(checks)


def _strings(value: Any, where: str, key: str) -> list[str]:
    """A list of strings from a list, or from one string ("a|b" in a CSV cell holds two)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise UserError(f"{where}: '{key}' must be a list of strings (or one string), not {type(value).__name__}")


def _text(value: Any, where: str, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: '{key}' must be a string, not {type(value).__name__}")
    return value


def _flag(value: Any, where: str) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise UserError(f"{where}: 'only' must be true or false, not {value!r}")


def _question(value: Any, where: str) -> Question:
    if isinstance(value, dict) and set(value) == {"text"}:  # a plain text file: one question per line
        value = value["text"]
    item = {"question": value} if isinstance(value, str) else value
    if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
        raise UserError(
            f"{where}: each question needs a non-empty 'question' string (keys: {', '.join(QUESTION_KEYS)})"
        )
    unknown = sorted(set(item) - set(QUESTION_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; use {', '.join(QUESTION_KEYS)}")
    question = Question(
        item["question"],
        _text(item.get("kind"), where, "kind") or "general",
        _strings(item.get("expected"), where, "expected"),
        _text(item.get("reference"), where, "reference") or _text(item.get("answer"), where, "answer"),
        _text(item.get("category"), where, "category"),
        _flag(item.get("only"), where),
        _text(item.get("name"), where, "name"),
        _text(item.get("maker"), where, "maker"),
    )
    if question.only and not question.expected:
        raise UserError(f"{where}: 'only' needs 'expected' fragments (the answer must be one of them)")
    echoes = [f for f in question.expected if contains_expected(question.question, [f])]
    if echoes and len(echoes) == len(question.expected) and not question.only:
        log.warning("%s: every expected fragment occurs in the question, so no answer counts (use 'only')", where)
    return question


def load_questions(entry: str, variables: dict[str, str], base_dir: Path | None = None) -> list[Question]:
    """Questions from a bundled name or a file in any data layout: JSON (a list), JSONL, CSV, Parquet or text (a
    question per line), each row a question string or a {question, kind, expected, only, name, maker, reference,
    category} object.

    `{{key}}` placeholders are filled from `variables`; a bad row raises a UserError naming its file and line.
    """
    path = resolve_file(entry, base_dir)
    questions = []
    for row in read_rows(path):
        where = row.where(path)
        if row.error is not None:
            raise UserError(f"{where}: {row.error}")
        questions.append(_question(fill_placeholders(row.value, variables), where))
    if not questions:
        raise UserError(f"{path}: no questions in the file; give one question per row")
    return questions
