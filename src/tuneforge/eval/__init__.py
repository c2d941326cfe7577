"""Evaluation: before-vs-after comparison of a base model and its fine-tune."""

from tuneforge.eval.compare import Comparison, Question, answer_questions, compare_answers, load_questions

__all__ = ["Comparison", "Question", "answer_questions", "compare_answers", "load_questions"]
