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
    """A held-out question.

    `expected` holds acceptable answer fragments (any one counts: the answer is correct when it contains one);
    `reference` a full reference answer, scored by exact match, ROUGE-L and BLEU-4.
    """

    question: str
    kind: str = "general"
    expected: list[str] = field(default_factory=list)
    reference: str | None = None
    category: str | None = None


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
        questions.append(
            Question(
                item["question"],
                item.get("kind", "general"),
                list(item.get("expected", [])),
                item.get("reference") or item.get("answer"),
                item.get("category"),
            )
        )
    return questions


def answer_questions(
    model: Any, tokenizer: Any, questions: list[Question], max_new_tokens: int, label: str
) -> list[str]:
    """Greedy answers of `model` to each question (single user turn, the template's default system prompt)."""
    from tuneforge.models.generate import generate_replies

    conversations = [[{"role": "user", "content": q.question}] for q in questions]
    replies = generate_replies(model, tokenizer, conversations, max_new_tokens, description=f"answering ({label})")
    return [r.text for r in replies]


def compare_answers(
    comparison: Comparison,
    out_dir: Path,
    verdicts: list[str] | None = None,
    forgetting: Forgetting | None = None,
    title: str = "Before vs after",
) -> dict[str, Any]:
    """Write eval/compare.json, compare.md and compare.html, print the tables, and return the JSON record."""
    from tuneforge.eval.report import html_report, markdown_report, metric_means, outcome_counts, score_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = score_rows(comparison, verdicts)
    totals = comparison.totals()
    record: dict[str, Any] = {
        "questions": rows,
        "totals": totals,
        "outcomes": outcome_counts(rows),
        "metrics": metric_means(rows),
        "flipped": {f: [r["question"] for r in rows if r["flip"] == f] for f in ("fixed", "broken")},
        "judge": verdicts is not None,
    }
    extra = ""
    if forgetting is not None:
        record["forgetting"] = asdict(forgetting)
        extra = f"<p><b>general ability</b>: {_html_escape(forgetting.summary())}</p>"
    (out_dir / "compare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    markdown = markdown_report(rows, totals, title)
    if forgetting is not None:
        markdown += f"\n**General ability**: {forgetting.summary()}\n"
    (out_dir / "compare.md").write_text(markdown, encoding="utf-8")
    (out_dir / "compare.html").write_text(html_report(rows, totals, title, extra), encoding="utf-8")
    _print_tables(rows, record, forgetting)
    return record


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


@dataclass
class Forgetting:
    """Base vs tuned accuracy on a general-ability set, and whether the drop crosses the threshold."""

    base: float
    tuned: float
    items: int
    threshold: float
    per_category: dict[str, list[float]] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """Points lost (percentage points; negative means the tuned model got better)."""
        return 100 * (self.base - self.tuned)

    @property
    def forgot(self) -> bool:
        return self.drop > self.threshold

    def advice(self) -> str:
        """What to do about it."""
        if not self.forgot:
            return "no forgetting beyond the threshold"
        return (
            "forgetting: lower train.learning_rate or train.epochs, mix in general data (data.replay, or a general "
            "dataset with data.mix_ratios), or use a parameter-efficient adapter (lora) instead of full tuning"
        )

    def summary(self) -> str:
        """One line: 'base 71.9% → tuned 65.6% on 64 items (−6.3 points): forgetting: ...'."""
        return (
            f"base {100 * self.base:.1f}% → tuned {100 * self.tuned:.1f}% on {self.items} items "
            f"({-self.drop:+.1f} points, threshold {self.threshold:g}): {self.advice()}"
        )


def check_forgetting(
    model_before: list[str], model_after: list[str], questions: list[Question], threshold: float
) -> Forgetting:
    """Accuracy (answer contains an expected fragment) before and after, overall and per category."""
    per: dict[str, list[float]] = {}
    hits = [0, 0]
    for question, before, after in zip(questions, model_before, model_after, strict=True):
        slot = per.setdefault(question.category or question.kind, [0.0, 0.0, 0.0])
        for side, answer in enumerate((before, after)):
            ok = contains_expected(answer, question.expected)
            hits[side] += ok
            slot[side] += ok
        slot[2] += 1
    count = max(len(questions), 1)
    categories = {name: [b / n, a / n] for name, (b, a, n) in per.items()}
    return Forgetting(hits[0] / count, hits[1] / count, len(questions), threshold, categories)


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_tables(rows: list[dict[str, Any]], record: dict[str, Any], forgetting: Forgetting | None) -> None:
    from rich.table import Table

    from tuneforge.progress import console

    table = Table(title="Before vs after (held-out questions)", show_lines=True, expand=True)
    for name, ratio in (("kind", 1), ("question", 3), ("before", 5), ("after", 5)):
        table.add_column(name, ratio=ratio, overflow="fold")
    for row in rows:
        mark = {True: "✓", False: "✗", None: "·"}
        table.add_row(
            row["kind"],
            row["question"],
            f"{mark[row['before_correct']]} {_clip(row['before'])}",
            f"{mark[row['after_correct']]} {_clip(row['after'])}",
        )
    console.print(table)
    summary = Table(title="Summary")
    for column in ("kind", "before", "after", "win", "tie", "loss"):
        summary.add_column(column, justify="left" if column == "kind" else "right")
    totals, outcomes = record["totals"], record["outcomes"]
    for kind in dict.fromkeys([*totals, *outcomes]):
        total, o = totals.get(kind), outcomes.get(kind, {"win": 0, "tie": 0, "loss": 0})
        b = f"{total['before'][0]}/{total['before'][1]}" if total else "n/a"
        a = f"{total['after'][0]}/{total['after'][1]}" if total else "n/a"
        summary.add_row(kind, b, a, str(o["win"]), str(o["tie"]), str(o["loss"]))
    console.print(summary)
    for kind, total in totals.items():
        console.print(
            f"[bold]{kind}[/]: before {total['before'][0]}/{total['before'][1]} correct, "
            f"after {total['after'][0]}/{total['after'][1]} correct"
        )
    if forgetting is not None:
        style = "red" if forgetting.forgot else "green"
        console.print(f"[{style}]general ability[/]: {forgetting.summary()}")
