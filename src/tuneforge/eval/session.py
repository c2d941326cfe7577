"""The before/after evaluation shared by `tuneforge train` (eval section) and `tuneforge compare`.

`BeforeAnswers` are generated from the base model first (before training starts, so they are never skipped),
with the base model's loss on the general reference answers; `finish_comparison` generates the tuned answers with
the same decoding settings, judges, checks forgetting (by generation and by likelihood) and writes the report. A judge named on the command line (--judge) takes precedence over TUNEFORGE_JUDGE_URL and eval.judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.schema import EvalSection
from tuneforge.data.render import RenderedSample
from tuneforge.eval.compare import (
    Comparison,
    GeneralCheck,
    Question,
    answer_questions,
    answer_replies,
    check_forgetting,
    compare_answers,
    load_questions,
)
from tuneforge.eval.judge import check_judge, choose_judge, make_judge
from tuneforge.eval.judge import verdicts as judge_verdicts
from tuneforge.eval.likelihood import LikelihoodCheck, reference_samples, score_likelihood
from tuneforge.models.rundir import RunLayout

__all__ = ["BeforeAnswers", "ComparisonHook", "base_answers", "check_judge_settings", "finish_comparison"]


@dataclass
class BeforeAnswers:
    """The base model's answers to the comparison questions and the general set (and how many of those were cut
    at the length limit), and its loss per token on the general reference answers."""

    questions: list[Question]
    answers: list[str]
    general: list[Question]
    general_answers: list[str]
    general_cut: int = 0
    reference: list[RenderedSample] = field(default_factory=list)
    reference_loss: float = 0.0


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
    reference = (
        reference_samples(section.general_reference, tokenizer, variables, base_dir)
        if section.general_reference
        else []
    )
    if not questions and not general and not reference:
        return None
    answers = answer_questions(model, tokenizer, questions, section.max_new_tokens, "base") if questions else []
    replies = (
        answer_replies(model, tokenizer, general, section.general_max_new_tokens, "base, general set")
        if general
        else []
    )
    reference_loss = score_likelihood(model, reference)[0] if reference else 0.0
    cut = sum(not reply.finished for reply in replies)
    return BeforeAnswers(questions, answers, general, [r.text for r in replies], cut, reference, reference_loss)


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
    comparison = Comparison(before.questions, before.answers, after)
    return compare_answers(comparison, out_dir, verdicts, general=_general_check(model, tokenizer, before, section))


def _general_check(model: Any, tokenizer: Any, before: BeforeAnswers, section: EvalSection) -> GeneralCheck | None:
    """The tuned model's answers to the general set and its loss on the reference answers, beside the base's."""
    likelihood = None
    if before.reference:
        tuned_loss, tokens = score_likelihood(model, before.reference)
        likelihood = LikelihoodCheck(
            str(section.general_reference), before.reference_loss, tuned_loss, len(before.reference), tokens,
            section.loss_threshold,
        )  # fmt: skip
    if not before.general:
        if likelihood is None:
            return None
        return GeneralCheck([], [], [], 0, 0, section.general_max_new_tokens, None, likelihood)
    limit = section.general_max_new_tokens
    replies = answer_replies(model, tokenizer, before.general, limit, "tuned, general")
    after = [reply.text for reply in replies]
    forgetting = check_forgetting(before.general_answers, after, before.general, section.forgetting_threshold)
    cut_after = sum(not reply.finished for reply in replies)
    return GeneralCheck(
        before.general, before.general_answers, after, before.general_cut, cut_after, limit, forgetting, likelihood
    )


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
