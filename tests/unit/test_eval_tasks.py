"""Multiple-choice benchmarks, loss/perplexity and predict-mode metrics."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import render_conversation
from tuneforge.errors import UserError
from tuneforge.eval.multiple_choice import letter_ids, load_benchmark, score_benchmark
from tuneforge.eval.perplexity import loss_and_perplexity
from tuneforge.eval.predict import predict_and_score, score_predictions
from tuneforge.eval.scores import bleu4, rouge_l, rouge_n


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def mmlu(tmp_path: Path) -> Path:
    _write(
        tmp_path / "test/astronomy_test.csv",
        'Largest planet?,Mars,Jupiter,Venus,Earth,B\n"Red, planet?",Mars,Jupiter,Venus,Earth,A\n',
    )
    _write(tmp_path / "test/math_test.csv", "2+2?,3,4,5,6,B\n3+3?,5,7,6,9,C\n1+1?,2,3,4,5,A\n")
    _write(tmp_path / "dev/math_dev.csv", "1+2?,3,4,5,6,A\n")
    return tmp_path


def test_mmlu_layout(mmlu: Path):
    items, dev = load_benchmark(mmlu)
    assert [(i.subject, i.answer) for i in items] == [
        ("astronomy", "B"),
        ("astronomy", "A"),
        ("math", "B"),
        ("math", "C"),
        ("math", "A"),
    ]
    assert items[1].question == "Red, planet?" and items[0].options == ["Mars", "Jupiter", "Venus", "Earth"]
    assert list(dev) == ["math"] and dev["math"][0].answer == "A"
    items, _ = load_benchmark(mmlu, subjects=["math"])
    assert len(items) == 3
    with pytest.raises(UserError, match="physics"):
        load_benchmark(mmlu, subjects=["physics"])


def test_ceval_and_cmmlu_layouts(tmp_path: Path):
    _write(tmp_path / "ceval/val/law_val.csv", "id,question,A,B,C,D,answer,explanation\n0,问题一,甲,乙,丙,丁,C,因为\n")
    items, _ = load_benchmark(tmp_path / "ceval")
    assert items[0].question == "问题一" and items[0].answer == "C" and items[0].subject == "law"
    _write(tmp_path / "cmmlu/test/history.csv", ",Question,A,B,C,D,Answer\n0,谁？,a,b,c,d,D\n")
    items, _ = load_benchmark(tmp_path / "cmmlu")
    assert items[0].answer == "D" and items[0].subject == "history"
    _write(tmp_path / "bad/test/x_test.csv", "q,a,b,c,d,E\n")
    with pytest.raises(UserError, match="expected one of A, B, C, D"):
        load_benchmark(tmp_path / "bad")
    with pytest.raises(UserError, match="no test/ or val/"):
        load_benchmark(tmp_path / "nothing")


class AlwaysC(torch.nn.Module):
    """A stand-in model whose next token is always the letter C."""

    def __init__(self, tokenizer):
        super().__init__()
        self.vocab = len(tokenizer)
        self.c_id = letter_ids(tokenizer)[2]
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, use_cache=False, logits_to_keep=0):
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        logits[:, :, self.c_id] = 5.0
        return SimpleNamespace(logits=logits)


def test_scoring_counts_choices_per_subject(mmlu: Path, tiny_llama_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    items, dev = load_benchmark(mmlu)
    result = score_benchmark(AlwaysC(tokenizer), tokenizer, items, dev, shots=1, batch_size=2)
    assert [r["choice"] for r in result["results"]] == ["C"] * 5
    assert result["accuracy"] == pytest.approx(1 / 5)  # only "3+3?" has answer C
    assert result["per_subject"] == {
        "astronomy": {"accuracy": 0.0, "items": 2},
        "math": {"accuracy": 1 / 3, "items": 3},
    }
    # a real (tiny) model gives a probability distribution over the four letters for each item
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    real = score_benchmark(model, tokenizer, items, dev, shots=1)
    assert real["items"] == 5 and all(len(r["logprobs"]) == 4 and max(r["logprobs"]) <= 0 for r in real["results"])


def test_perplexity_is_exp_of_the_mean_supervised_token_loss(tiny_llama_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    conversations = [
        Conversation([Message("user", "Hi"), Message("assistant", "Hello there.")]),
        Conversation([Message("user", "Name a fruit."), Message("assistant", "An apple.")]),
    ]
    samples = [render_conversation(tokenizer, c, 128) for c in conversations]
    total, tokens = 0.0, 0
    with torch.no_grad():
        for s in samples:
            logits = model(torch.tensor([s.input_ids])).logits[0, :-1]
            targets = torch.tensor(s.labels[1:])
            keep = targets != -100
            total += float(F.cross_entropy(logits[keep], targets[keep], reduction="sum"))
            tokens += int(keep.sum())
    result = loss_and_perplexity(model, samples)
    assert result["tokens"] == tokens and result["samples"] == 2
    assert result["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_predict_metrics_are_means_of_the_scorers():
    predictions, references = ["the cat sat on the mat", "我爱北京"], ["the cat is on the mat", "我爱上海"]
    metrics = score_predictions(predictions, references)
    pairs = list(zip(predictions, references, strict=True))
    assert metrics["rouge-l"] == pytest.approx(50 * sum(rouge_l(p, [r]) for p, r in pairs))
    assert metrics["rouge-1"] == pytest.approx(50 * (5 / 6 + 0.5))
    assert metrics["rouge-2"] == pytest.approx(50 * sum(rouge_n(p, [r], 2) for p, r in pairs))
    assert metrics["bleu-4"] == pytest.approx(50 * sum(bleu4(p, [r]) for p, r in pairs))


def test_predict_answers_each_prompt(tiny_llama_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    conversations = [
        Conversation([Message("user", "Hi"), Message("assistant", "Hello.")], source="f:1"),
        Conversation([Message("user", "Bye"), Message("assistant", "Goodbye.")], source="f:2"),
    ]
    metrics, rows = predict_and_score(model, tokenizer, conversations, max_new_tokens=4)
    assert [r["source"] for r in rows] == ["f:1", "f:2"] and rows[1]["reference"] == "Goodbye."
    assert set(metrics) == {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "corpus-bleu-4"}
