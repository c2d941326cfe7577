"""Forgetting by likelihood: loss per answer token of base and tuned on human-written answers, beside generation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.config.schema import EvalSection
from tuneforge.eval.compare import Comparison, Forgetting, GeneralCheck, Question, compare_answers
from tuneforge.eval.likelihood import LikelihoodCheck, reference_samples, score_likelihood
from tuneforge.eval.perplexity import loss_and_perplexity
from tuneforge.methods.loss import IGNORE_INDEX


def test_the_check_reads_the_rise_against_its_threshold():
    small = LikelihoodCheck("general_reference", 2.0, 2.04, 40, 1800, threshold=0.05)
    assert small.rise == pytest.approx(0.04) and not small.forgot
    big = LikelihoodCheck("general_reference", 2.0, 2.2, 40, 1800, threshold=0.05)
    assert big.forgot and "forgetting" in big.summary()
    assert big.summary().startswith(
        "loss per token on 40 human-written answers (1,800 tokens, general_reference): base 2.000 → tuned 2.200 "
        "(+0.200, threshold 0.05)"
    )
    record = big.as_dict()
    assert record["base_perplexity"] == pytest.approx(math.exp(2.0)) and record["forgot"] is True


def test_reference_answers_are_scored_on_the_answer_tokens_only(tiny_llama_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    samples = reference_samples("general_reference", tokenizer, {}, None)
    rows = json.loads((Path(__file__).parents[2] / "src/tuneforge/resources/data/general_reference.json").read_text())
    assert len(samples) == len(rows)  # every human-written answer, none dropped or deduplicated
    answers = sorted(tokenizer.decode([t for t in s.labels if t != IGNORE_INDEX]) for s in samples)
    # the answer is scored: not the question, nor the end-of-turn marker (whether a model stops is format)
    assert answers == sorted(row["output"] for row in rows)
    assert all(
        s.input_ids[-2:] == tokenizer.encode("<|im_end|>\n") and s.labels[-2:] == [IGNORE_INDEX] * 2 for s in samples
    )
    loss, tokens = score_likelihood(model, samples)
    assert tokens == sum(sum(t != IGNORE_INDEX for t in s.labels) for s in samples)
    assert loss == pytest.approx(loss_and_perplexity(model, samples)["loss"])


def _perturbed(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def test_a_run_reports_likelihood_forgetting_beside_the_generation_figure(tiny_llama_dir: Path, tmp_path: Path):
    """The whole path a training run takes (ComparisonHook): base loss before, tuned loss after, both reported."""
    from tuneforge.eval.session import ComparisonHook
    from tuneforge.models.rundir import RunLayout

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"question": f"Say {w}.", "expected": ["ok"]}) + "\n" for w in "ab"))
    section = EvalSection(
        general=str(general), general_max_new_tokens=2, general_reference="general_reference", loss_threshold=0.01
    )
    hook = ComparisonHook(section, {}, tmp_path)
    hook.before_training(model, tokenizer)
    samples = reference_samples("general_reference", tokenizer, {}, None)
    base_loss = loss_and_perplexity(model, samples)["loss"]
    _perturbed(model)  # "training" that damages general ability
    tuned_loss = loss_and_perplexity(model, samples)["loss"]
    assert tuned_loss > base_loss + 0.01

    record = hook.after_training(model, tokenizer, RunLayout(tmp_path / "run"))
    likelihood = record["likelihood"]
    assert likelihood["base_loss"] == pytest.approx(base_loss) and likelihood["tuned_loss"] == pytest.approx(
        tuned_loss
    )
    assert likelihood["items"] == len(samples) and likelihood["forgot"] is True
    assert record["forgetting"]["items"] == 2  # the generation figure is still there
    assert [a["question"] for a in record["general"]["answers"]] == ["Say a.", "Say b."]
    assert record["general"]["cut_at_limit"] == {"before": 2, "after": 2, "max_new_tokens": 2}
    markdown = (tmp_path / "run" / "eval" / "compare.md").read_text(encoding="utf-8")
    assert "**General ability (generation)**: base 0.0% → tuned 0.0% on 2 items" in markdown
    assert f"**General ability (likelihood)**: loss per token on {len(samples)} human-written answers" in markdown
    assert f"base {base_loss:.3f} → tuned {tuned_loss:.3f}" in markdown
    page = (tmp_path / "run" / "eval" / "compare.html").read_text(encoding="utf-8")
    assert f"<b>general ability (likelihood)</b>: loss per token on {len(samples)} human-written answers" in page


def _general(before_right: int, after_right: int, cut: tuple[int, int], rise: float | None) -> GeneralCheck:
    questions = [Question(f"What is {i} + 1?", expected=[str(i + 1)], category="arithmetic") for i in range(10)]
    before = [str(i + 1) if i < before_right else "Let me think about" for i in range(10)]
    after = [str(i + 1) if i < after_right else "No idea." for i in range(10)]
    forgetting = Forgetting(before_right / 10, after_right / 10, 10, 5.0)
    likelihood = None if rise is None else LikelihoodCheck("ref", 2.0, 2.0 + rise, 40, 1800, 0.05)
    return GeneralCheck(questions, before, after, cut[0], cut[1], 24, forgetting, likelihood)


def test_a_rise_in_general_accuracy_is_explained_in_the_closing_note(tmp_path: Path):
    general = _general(4, 6, cut=(5, 1), rise=0.01)
    note = general.closing_note()
    assert note is not None and note.startswith("general accuracy rose 20.0 points (2 items fixed, 0 broken); ")
    assert "shorter (on average 4 characters against 11)" in note  # (4 + 6 x 18) / 10 before, (6 + 4 x 8) / 10 after
    assert "fewer were cut at the 24-token limit (1 against 5)" in note
    assert "did not fall (+0.010): the tuned model does not know more, it answers differently." in note
    record = compare_answers(Comparison([], [], []), tmp_path, general=general)
    assert record["general"]["note"] == note
    assert f"**Note**: {note}" in (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert _general(5, 5, cut=(5, 1), rise=0.01).closing_note() is None  # no rise, nothing to explain
    assert _general(6, 5, cut=(5, 1), rise=0.01).closing_note() is None
    assert _general(4, 6, cut=(0, 0), rise=-0.1).closing_note() == (
        "general accuracy rose 20.0 points (2 items fixed, 0 broken); the loss per token on human-written answers "
        "fell as well (-0.100)."
    )
