"""Ask the same held-out questions before and after tuning, score them, and write the comparison."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.catalog import resolve_file
from tuneforge.data.pipeline import fill_placeholders
from tuneforge.errors import UserError

__all__ = ["Comparison", "Question", "answer_questions", "compare_answers", "contains_expected", "load_questions"]


@dataclass
class Question:
    """A held-out question; `expected` holds acceptable answer fragments (any one counts)."""

    question: str
    kind: str = "general"
    expected: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Answers of both models to every question, and whether each was right."""

    questions: list[Question]
    before: list[str]
    after: list[str]

    def correct(self, answers: list[str]) -> list[bool | None]:
        return [
            contains_expected(a, q.expected) if q.expected else None
            for q, a in zip(self.questions, answers, strict=True)
        ]

    def totals(self) -> dict[str, dict[str, list[int]]]:
        """{kind: {"before": [right, scored], "after": [right, scored]}}."""
        totals: dict[str, dict[str, list[int]]] = {}
        for label, answers in (("before", self.before), ("after", self.after)):
            for question, ok in zip(self.questions, self.correct(answers), strict=True):
                if ok is None:
                    continue
                slot = totals.setdefault(question.kind, {"before": [0, 0], "after": [0, 0]})[label]
                slot[0] += int(ok)
                slot[1] += 1
        return totals


def contains_expected(answer: str, expected: list[str]) -> bool:
    """True when any expected fragment occurs in the answer, case-insensitively, as a whole word or number."""
    for fragment in expected:
        pattern = re.escape(fragment.lower())
        if fragment[:1].isalnum() and fragment.isascii():
            pattern = r"(?<![a-z0-9])" + pattern
        if fragment[-1:].isalnum() and fragment.isascii():
            pattern += r"(?![a-z0-9])"
        if re.search(pattern, answer.lower()):
            return True
    return False


def load_questions(entry: str, variables: dict[str, str], base_dir: Path | None = None) -> list[Question]:
    """Questions from a JSON list of strings or of {question, kind, expected} objects (bundled name or path)."""
    path = resolve_file(entry, base_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read questions file {path}: {err}") from None
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{path}: expected a non-empty JSON list of questions")
    questions = []
    for index, item in enumerate(fill_placeholders(raw, variables)):
        item = {"question": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise UserError(f"{path}: item {index} needs a 'question' string")
        questions.append(Question(item["question"], item.get("kind", "general"), list(item.get("expected", []))))
    return questions


def answer_questions(
    model: Any, tokenizer: Any, questions: list[Question], max_new_tokens: int, label: str
) -> list[str]:
    """Greedy answers of `model` to each question (single user turn, the template's default system prompt)."""
    from tuneforge.models.generate import generate_replies

    conversations = [[{"role": "user", "content": q.question}] for q in questions]
    replies = generate_replies(model, tokenizer, conversations, max_new_tokens, description=f"answering ({label})")
    return [r.text for r in replies]


def compare_answers(comparison: Comparison, out_dir: Path) -> None:
    """Write eval/compare.json and eval/compare.md, and print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before_ok, after_ok = comparison.correct(comparison.before), comparison.correct(comparison.after)
    rows = [
        {**asdict(q), "before": b, "after": a, "before_correct": bo, "after_correct": ao}
        for q, b, a, bo, ao in zip(
            comparison.questions, comparison.before, comparison.after, before_ok, after_ok, strict=True
        )
    ]
    record = {"questions": rows, "totals": comparison.totals()}
    (out_dir / "compare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "compare.md").write_text(_markdown(comparison, rows), encoding="utf-8")
    _print_table(comparison, rows)


def _mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "·"}[ok]


def _markdown(comparison: Comparison, rows: list[dict[str, Any]]) -> str:
    lines = ["# Before vs after", "", "| kind | question | before | after |", "|---|---|---|---|"]
    for row in rows:
        before = f"{_mark(row['before_correct'])} {row['before']}".replace("|", "\\|").replace("\n", " ")
        after = f"{_mark(row['after_correct'])} {row['after']}".replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['kind']} | {row['question']} | {before} | {after} |")
    lines += ["", "| kind | before | after |", "|---|---|---|"]
    for kind, total in comparison.totals().items():
        lines.append(
            f"| {kind} | {total['before'][0]}/{total['before'][1]} | {total['after'][0]}/{total['after'][1]} |"
        )
    return "\n".join(lines) + "\n"


def _print_table(comparison: Comparison, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from tuneforge.train.progress import console

    table = Table(title="Before vs after (held-out questions)", show_lines=True, expand=True)
    for name, ratio in (("kind", 1), ("question", 3), ("before", 5), ("after", 5)):
        table.add_column(name, ratio=ratio, overflow="fold")
    for row in rows:
        table.add_row(
            row["kind"],
            row["question"],
            f"{_mark(row['before_correct'])} {_clip(row['before'])}",
            f"{_mark(row['after_correct'])} {_clip(row['after'])}",
        )
    console.print(table)
    for kind, total in comparison.totals().items():
        console.print(
            f"[bold]{kind}[/]: before {total['before'][0]}/{total['before'][1]} correct, "
            f"after {total['after'][0]}/{total['after'][1]} correct"
        )


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
