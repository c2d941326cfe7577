"""Multiple-choice benchmarks, loss/perplexity and predict-mode metrics."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from fixtures.scripted_model import build_scripted_model
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


def test_option_logprobs_of_a_real_model(mmlu: Path, tiny_llama_dir: Path):
    """Batched (left-padded) scoring equals scoring each prompt alone, and the prompt is the documented one."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    items, dev = load_benchmark(mmlu)
    batched = score_benchmark(model, tokenizer, items, dev, shots=1, batch_size=8)
    alone = score_benchmark(model, tokenizer, items, dev, shots=1, batch_size=1)
    for together, single in zip(batched["results"], alone["results"], strict=True):
        assert together["logprobs"] == pytest.approx(single["logprobs"], abs=1e-4)
    choices = [r["choice"] for r in batched["results"]]
    assert choices == ["ABCD"[max(range(4), key=lambda k: r["logprobs"][k])] for r in batched["results"]]
    assert batched["accuracy"] == sum(c == i.answer for c, i in zip(choices, items, strict=True)) / 5
    # math has a dev example: one solved shot, then the question (astronomy has none: 0 shots)
    intro = "The following are multiple choice questions about math. Answer with the letter.\n\n"
    messages = [
        {"role": "user", "content": intro + "1+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"},
    ]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)[letter_ids(tokenizer)]
    assert batched["results"][2]["logprobs"] == pytest.approx(logprobs.tolist(), abs=1e-4)


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


def test_predict_answers_each_prompt(tiny_llama_dir: Path, tmp_path: Path):
    scripted = build_scripted_model(tiny_llama_dir, tmp_path / "scripted", "Hello there.")  # says it to anything
    tokenizer = AutoTokenizer.from_pretrained(scripted)
    model = AutoModelForCausalLM.from_pretrained(scripted)
    conversations = [
        Conversation([Message("user", "Hi"), Message("assistant", "Hello.")], source="f:1"),
        Conversation([Message("user", "Bye"), Message("assistant", "Goodbye.")], source="f:2"),
        Conversation([Message("user", "Greet me")], source="f:3"),  # no reference answer: left out
    ]
    metrics, rows = predict_and_score(model, tokenizer, conversations, max_new_tokens=8)
    assert rows == [
        {"source": "f:1", "prompt": "Hi", "reference": "Hello.", "prediction": "Hello there."},
        {"source": "f:2", "prompt": "Bye", "reference": "Goodbye.", "prediction": "Hello there."},
    ]
    # "hello there" vs "hello": ROUGE-1 P 1/2, R 1 → F1 2/3; vs "goodbye": 0; in %, averaged over the 2 rows
    assert metrics["rouge-1"] == pytest.approx(100 * (2 / 3) / 2)
    assert metrics["rouge-l"] == pytest.approx(100 * (2 / 3) / 2)
    assert metrics["rouge-2"] == 0.0  # "hello" and "goodbye" have no bigram
    # BLEU-4 of "hello there" vs "hello": precisions 1/2, (0+1)/(1+1), 1/1, 1/1 (add-one past unigrams), no BP
    assert metrics["bleu-4"] == pytest.approx(100 * ((1 / 2) * (1 / 2)) ** 0.25 / 2)
    assert metrics["corpus-bleu-4"] == 0.0  # no 4-gram in the corpus matches
