"""Ask the same held-out questions before and after tuning, score them, and write the comparison."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_write_text
from tuneforge.eval.degenerate import Loop, repetition_loop
from tuneforge.eval.likelihood import LikelihoodCheck
from tuneforge.eval.questions import Question, contains_expected, load_questions, score_answer

__all__ = [
    "Comparison",
    "Forgetting",
    "GeneralCheck",
    "Question",
    "answer_questions",
    "answer_replies",
    "check_forgetting",
    "compare_answers",
    "contains_expected",
    "load_questions",
]


@dataclass
class Comparison:
    """Answers of both models to every question, and whether each was right."""

    questions: list[Question]
    before: list[str]
    after: list[str]

    def correct(self, answers: list[str]) -> list[bool | None]:
        """Right or wrong per question (None: nothing to score it by); a repetition loop is always wrong."""
        return [score_answer(q, a) for q, a in zip(self.questions, answers, strict=True)]

    def loops(self, answers: list[str]) -> list[Loop | None]:
        """The repetition loop each answer is caught in, or None."""
        return [repetition_loop(answer) for answer in answers]

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


def answer_replies(
    model: Any, tokenizer: Any, questions: list[Question], max_new_tokens: int, label: str
) -> list[Any]:
    """Greedy replies (text, and whether the model ended it before `max_new_tokens`) to each question, asked as a
    single user turn with the template's default system prompt."""
    from tuneforge.models.generate import generate_replies

    conversations = [[{"role": "user", "content": q.question}] for q in questions]
    return generate_replies(model, tokenizer, conversations, max_new_tokens, description=f"answering ({label})")


def answer_questions(
    model: Any, tokenizer: Any, questions: list[Question], max_new_tokens: int, label: str
) -> list[str]:
    """Greedy answers of `model` to each question (single user turn, the template's default system prompt)."""
    return [reply.text for reply in answer_replies(model, tokenizer, questions, max_new_tokens, label)]


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
    """Accuracy (each answer scored as in the comparison) before and after, overall and per category."""
    per: dict[str, list[float]] = {}
    hits = [0, 0]
    for question, before, after in zip(questions, model_before, model_after, strict=True):
        slot = per.setdefault(question.category or question.kind, [0.0, 0.0, 0.0])
        for side, answer in enumerate((before, after)):
            ok = bool(score_answer(question, answer))
            hits[side] += ok
            slot[side] += ok
        slot[2] += 1
    count = max(len(questions), 1)
    categories = {name: [b / n, a / n] for name, (b, a, n) in per.items()}
    return Forgetting(hits[0] / count, hits[1] / count, len(questions), threshold, categories)


@dataclass
class GeneralCheck:
    """Everything the forgetting check measured: generation accuracy, answers and how many were cut at the
    length limit, and (when a reference set is given) the likelihood of human-written answers."""

    questions: list[Question]
    before: list[str]
    after: list[str]
    cut_before: int
    cut_after: int
    max_new_tokens: int
    forgetting: Forgetting | None
    likelihood: LikelihoodCheck | None = None

    def answers(self) -> list[dict[str, Any]]:
        """One row per item: both answers, whether each was right and whether it is a repetition loop."""
        return [
            {
                "question": q.question,
                "category": q.category,
                "before": b,
                "after": a,
                "before_correct": bool(score_answer(q, b)),
                "after_correct": bool(score_answer(q, a)),
                "before_loop": repetition_loop(b) is not None,
                "after_loop": repetition_loop(a) is not None,
            }
            for q, b, a in zip(self.questions, self.before, self.after, strict=True)
        ]

    def closing_note(self) -> str | None:
        """Where a rise in general accuracy comes from (teaching something narrow should not raise it: until shown
        otherwise it is a measurement effect): the items it flipped, answer length, answers cut at the length
        limit, and whether the likelihood of human-written answers moved with it. None when accuracy did not rise."""
        if self.forgetting is None or self.forgetting.drop >= 0:
            return None
        rows = self.answers()
        fixed = sum(r["after_correct"] and not r["before_correct"] for r in rows)
        broken = sum(r["before_correct"] and not r["after_correct"] for r in rows)
        parts = [f"general accuracy rose {-self.forgetting.drop:.1f} points ({fixed} items fixed, {broken} broken)"]
        length = [sum(len(a) for a in answers) / max(len(answers), 1) for answers in (self.before, self.after)]
        if self.cut_before > self.cut_after:
            parts.append(
                f"the tuned model's answers are shorter (on average {length[1]:.0f} characters against "
                f"{length[0]:.0f}) and fewer were cut at the {self.max_new_tokens}-token limit ({self.cut_after} "
                f"against {self.cut_before}), so more of them reach the answer before the limit"
            )
        if self.likelihood is not None and self.likelihood.rise >= 0:
            parts.append(
                f"the loss per token on human-written answers did not fall ({self.likelihood.rise:+.3f}): the tuned "
                "model does not know more, it answers differently"
            )
        elif self.likelihood is not None:
            parts.append(f"the loss per token on human-written answers fell as well ({self.likelihood.rise:+.3f})")
        return "; ".join(parts) + "."

    def record(self) -> dict[str, Any]:
        """What compare.json holds about the general set (besides the `forgetting` accuracy record)."""
        return {
            "answers": self.answers(),
            "cut_at_limit": {
                "before": self.cut_before,
                "after": self.cut_after,
                "max_new_tokens": self.max_new_tokens,
            },
            "loops": {
                "before": sum(repetition_loop(a) is not None for a in self.before),
                "after": sum(repetition_loop(a) is not None for a in self.after),
            },
            "note": self.closing_note(),
        }


def compare_answers(
    comparison: Comparison,
    out_dir: Path,
    verdicts: list[str] | None = None,
    forgetting: Forgetting | None = None,
    title: str = "Before vs after",
    general: GeneralCheck | None = None,
) -> dict[str, Any]:
    """Write eval/compare.json, compare.md and compare.html, print the tables, and return the JSON record.

    `general` (the full forgetting check) supersedes `forgetting` (its accuracy part alone).
    """
    from tuneforge.eval.report import (
        html_report,
        loop_counts,
        markdown_report,
        metric_means,
        outcome_counts,
        score_rows,
    )
    from tuneforge.eval.terminal import print_tables

    out_dir.mkdir(parents=True, exist_ok=True)
    forgetting = general.forgetting if general is not None else forgetting
    rows = score_rows(comparison, verdicts)
    totals = comparison.totals()
    record: dict[str, Any] = {
        "questions": rows,
        "totals": totals,
        "outcomes": outcome_counts(rows),
        "loops": loop_counts(rows),
        "metrics": metric_means(rows),
        "flipped": {f: [r["question"] for r in rows if r["flip"] == f] for f in ("fixed", "broken")},
        "judge": verdicts is not None,
    }
    lines: list[tuple[str, str, bool]] = []
    if forgetting is not None:
        record["forgetting"] = asdict(forgetting)
        lines.append(("general ability (generation)", forgetting.summary(), forgetting.forgot))
    if general is not None:
        record["general"] = general.record()
        if general.likelihood is not None:
            record["likelihood"] = general.likelihood.as_dict()
            lines.append(("general ability (likelihood)", general.likelihood.summary(), general.likelihood.forgot))
        note = general.closing_note()
        if note:
            lines.append(("note", note, False))
    atomic_write_text(out_dir / "compare.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    markdown = markdown_report(rows, totals, title)
    if lines:
        markdown += "\n" + "\n".join(f"**{name[0].upper()}{name[1:]}**: {text}  " for name, text, _ in lines) + "\n"
    atomic_write_text(out_dir / "compare.md", markdown)
    atomic_write_text(
        out_dir / "compare.html", html_report(rows, totals, title, [(name, text) for name, text, _ in lines])
    )
    print_tables(rows, record, lines)
    return record
