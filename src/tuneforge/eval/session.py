"""The before/after evaluation shared by `tuneforge train` (eval section) and `tuneforge compare`.

`BeforeAnswers` are generated from the base model first (before training starts, so they are never skipped);
`finish` generates the tuned answers with the same decoding settings, judges, checks forgetting and writes the
report. A judge named on the command line (--judge) takes precedence over TUNEFORGE_JUDGE_URL and eval.judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import EvalSection
from tuneforge.eval.compare import (
    Comparison,
    Forgetting,
    Question,
    answer_questions,
    check_forgetting,
    compare_answers,
    load_questions,
)
from tuneforge.eval.judge import check_judge, choose_judge, make_judge
from tuneforge.eval.judge import verdicts as judge_verdicts
from tuneforge.models.rundir import RunLayout

__all__ = ["BeforeAnswers", "ComparisonHook", "base_answers", "check_judge_settings", "finish_comparison"]


@dataclass
class BeforeAnswers:
    """The base model's answers to the comparison questions and the general set."""

    questions: list[Question]
    answers: list[str]
    general: list[Question]
    general_answers: list[str]


def _general(section: EvalSection, variables: dict[str, str], base_dir: Path | None) -> list[Question]:
    if not section.general:
        return []
    questions = load_questions(section.general, variables, base_dir)
    return questions[: section.general_limit] if section.general_limit else questions


def base_answers(
    model: Any, tokenizer: Any, section: EvalSection, variables: dict[str, str], base_dir: Path | None
) -> BeforeAnswers | None:
    """Answers of the base model, or None when the eval section asks for nothing."""
    questions = load_questions(section.questions, variables, base_dir) if section.questions else []
    general = _general(section, variables, base_dir)
    if not questions and not general:
        return None
    answers = answer_questions(model, tokenizer, questions, section.max_new_tokens, "base") if questions else []
    general_answers = (
        answer_questions(model, tokenizer, general, section.general_max_new_tokens, "base, general set")
        if general
        else []
    )
    return BeforeAnswers(questions, answers, general, general_answers)


def check_judge_settings(section: EvalSection, command_line_judge: str | None = None) -> None:
    """Refuse, before any model is loaded, a judge endpoint the comparison would not be allowed to call."""
    choice = choose_judge(command_line_judge, section.judge)
    if choice is not None and section.questions:
        check_judge(choice, section.judge_model, section.judge_remote)


def finish_comparison(
    model: Any,
    tokenizer: Any,
    before: BeforeAnswers,
    section: EvalSection,
    out_dir: Path,
    command_line_judge: str | None = None,
) -> dict[str, Any]:
    """Tuned answers, judge verdicts, forgetting check; writes out_dir/compare.{json,md,html}.

    The judge is `command_line_judge` (--judge), else TUNEFORGE_JUDGE_URL, else section.judge.
    """
    after = answer_questions(model, tokenizer, before.questions, section.max_new_tokens, "tuned")
    verdicts = None
    choice = choose_judge(command_line_judge, section.judge)
    if choice is not None and before.questions:
        ask = make_judge(choice, section.judge_model, section.judge_remote)
        verdicts = judge_verdicts(ask, before.questions, before.answers, after)
    forgetting: Forgetting | None = None
    if before.general:
        general_after = answer_questions(
            model, tokenizer, before.general, section.general_max_new_tokens, "tuned, general"
        )
        forgetting = check_forgetting(
            before.general_answers, general_after, before.general, section.forgetting_threshold
        )
    comparison = Comparison(before.questions, before.answers, after)
    return compare_answers(comparison, out_dir, verdicts, forgetting)


class ComparisonHook:
    """The before/after comparison of a training run (a tuneforge.train.run.RunHook).

    Before training it asks the base model the eval section's questions and general set; after training it asks
    the tuned model and writes the report into the run's eval/ folder.
    """

    def __init__(
        self,
        section: EvalSection,
        variables: dict[str, str],
        base_dir: Path | None,
        command_line_judge: str | None = None,
    ) -> None:
        check_judge_settings(section, command_line_judge)
        self.section, self.variables, self.base_dir = section, variables, base_dir
        self.command_line_judge = command_line_judge
        self.before: BeforeAnswers | None = None

    def before_training(self, model: Any, tokenizer: Any) -> None:
        self.before = base_answers(model, tokenizer, self.section, self.variables, self.base_dir)

    def after_training(self, model: Any, tokenizer: Any, layout: RunLayout) -> dict[str, Any] | None:
        if self.before is None:
            return None
        return finish_comparison(model, tokenizer, self.before, self.section, layout.eval, self.command_line_judge)
