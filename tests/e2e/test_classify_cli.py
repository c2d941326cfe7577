"""`tuneforge train` with method.name=classify on a tiny model: a separable set (texts with good or bad words) is
learnt with LoRA and with full fine-tuning, the scores, table and confusion matrix are written and agree, bad rows
are dropped with their locations, and the exported model loads with AutoModelForSequenceClassification."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.cli.main import main
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.methods.classify import ClassifyParams, attach_head, load_classifier, predict_classes

GOOD = ["good", "great", "lovely", "nice", "fine"]
BAD = ["bad", "awful", "poor", "sad", "dull"]
SUBJECTS = ["the film", "this book", "our trip", "the meal", "that song", "the show", "my day", "the game"]
ENDINGS = ["", " today", " again", " overall", " i think"]


def labelled_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` distinct texts, half with a good word (positive), half with a bad one (negative), shuffled."""
    rng = random.Random(seed)
    rows = []
    for label, words in (("positive", GOOD), ("negative", BAD)):
        combos = [f"{s} was {w}{e}" for s in SUBJECTS for w in words for e in ENDINGS]
        rows += [(text, label) for text in rng.sample(combos, count // 2)]
    rng.shuffle(rows)
    return rows


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(config: dict, folder: Path) -> str:
    """Run `tuneforge train` in this process; its console output."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(path)])
    assert code == 0, console.getvalue()[-3000:]
    return console.getvalue()


def printed_scores(output: str) -> dict:
    """The scores the end of `tuneforge train` printed, read back from its table."""
    head = re.search(r"classification of (\d+) validation samples: accuracy ([\d.]+), macro-F1 ([\d.]+)", output)
    assert head is not None, output[-2000:]
    rows = re.findall(r"^  (\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", output, re.MULTILINE)
    return {
        "samples": int(head.group(1)),
        "accuracy": head.group(2),
        "macro_f1": head.group(3),
        "per_class": {name: [p, r, f, int(n)] for name, p, r, f, n in rows},
    }


def as_printed(scores: dict) -> dict:
    return {
        "samples": scores["samples"],
        "accuracy": f"{scores['accuracy']:.4f}",
        "macro_f1": f"{scores['macro_f1']:.4f}",
        "per_class": {
            name: [f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", row["support"]]
            for name, row in scores["per_class"].items()
        },
    }


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def accuracy_before_training(model_dir: Path, texts: list[tuple[str, str]], labels: list[str]) -> float:
    """The validation accuracy of the base model with a fresh (untrained) head."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    attach_head(model, ClassifyParams(labels=labels))
    samples = []
    for text, label in texts:
        ids = tokenizer(text)["input_ids"]
        samples.append(RenderedSample(ids, [IGNORE_INDEX] * (len(ids) - 1) + [labels.index(label)], kind="classify"))
    predicted = predict_classes(model, samples)
    return sum(p == s.labels[-1] for p, s in zip(predicted, samples, strict=True)) / len(samples)


def base_config(model_dir: Path, out: Path, adapter: dict, **data: object) -> dict:
    return {
        "model": {"name_or_path": str(model_dir)},
        "data": {"cutoff_len": 64, **data},
        "method": {"name": "classify"},
        "adapter": adapter,
        "train": {
            "max_steps": 24,
            "batch_size": 4,
            "grad_accum": 1,
            "learning_rate": 3.0e-3,
            "warmup_ratio": 0.0,
        },
        "output": {"dir": str(out)},
    }


def test_lora_learns_the_classes_and_exports_a_sequence_classifier(tiny_llama_dir: Path, tmp_path: Path) -> None:
    rows = labelled_texts(80, seed=1)
    train_rows, val_rows = rows[:60], rows[60:]
    for name, rows in (("train", train_rows), ("val", val_rows)):
        lines = [json.dumps({"text": text, "label": label}) for text, label in rows]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    lora = {"name": "lora", "r": 8, "alpha": 16}
    config = base_config(tiny_llama_dir, run, lora, train=[str(tmp_path / "train.jsonl")])
    config["data"]["eval"] = [str(tmp_path / "val.jsonl")]  # the validation rows, known to compare before/after
    output = train(config, tmp_path)
    assert "estimate: not available" not in output and "estimate:" in output  # it reads the rows as the run does

    scores = json.loads((run / "eval" / "classification.json").read_text(encoding="utf-8"))
    assert scores["labels"] == ["negative", "positive"]  # no method.labels: the training data's, sorted
    assert scores["samples"] == len(val_rows)
    before = accuracy_before_training(tiny_llama_dir, val_rows, scores["labels"])
    assert scores["accuracy"] >= 0.9 and scores["accuracy"] > before, (scores["accuracy"], before)
    assert scores["macro_f1"] >= 0.85
    assert sum(map(sum, scores["confusion"])) == len(val_rows)
    assert printed_scores(output) == as_printed(scores)
    assert png_size(run / "eval" / "confusion_matrix.png") == (520, 420)
    saved = json.loads((run / "model" / "classification.json").read_text(encoding="utf-8"))
    assert saved == {"labels": ["negative", "positive"], "hidden_size": 64}
    # the validation of the last step measured the same model on the same rows (packed rather than padded)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 24 and {"accuracy", "f1/negative", "f1/positive"} <= set(last)
    assert last["val_accuracy"] == pytest.approx(scores["accuracy"])
    per_class = [last[f"val_f1/{name}"] for name in scores["labels"]]
    assert sum(per_class) / 2 == pytest.approx(scores["macro_f1"])

    # the run's classifier predicts what the evaluation counted; the export is a transformers classifier
    classifier = load_classifier(run)
    predicted = classifier.predict([text for text, _ in val_rows])
    correct = sum(p == label for p, (_, label) in zip(predicted, val_rows, strict=True))
    assert correct == sum(scores["confusion"][i][i] for i in range(2))
    exported = tmp_path / "exported"
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["export", str(run), "--to", str(exported)]) == 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(exported, dtype=torch.float32)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    tokenizer = AutoTokenizer.from_pretrained(exported)
    texts = [text for text, _ in val_rows[:6]]
    with torch.no_grad():
        theirs = torch.softmax(model(**tokenizer(texts, return_tensors="pt", padding=True)).logits, dim=-1)
    ours = torch.tensor([[row[name] for name in ("negative", "positive")] for row in classifier.probabilities(texts)])
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_full_fine_tuning_learns_from_a_csv_with_ids_and_drops_bad_rows(tiny_llama_dir: Path, tmp_path: Path) -> None:
    rows = labelled_texts(80, seed=3)
    table = tmp_path / "reviews.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for index, (text, label) in enumerate(rows):
            writer.writerow([text, label if index % 2 else ["negative", "positive"].index(label)])  # names or ids
        writer.writerows([["the film was so-so", "neutral"], ["", "positive"], ["the game was bad", ""]])
    run = tmp_path / "run"
    config = base_config(
        tiny_llama_dir,
        run,
        {"name": "full"},
        train=[str(table)],
        columns={"text": "review", "label": "sentiment"},
        val_size=20,
        max_drop_ratio=0.1,
    )
    config["method"]["labels"] = ["negative", "positive"]
    config["train"].update(learning_rate=1.0e-3, max_steps=16)
    output = train(config, tmp_path)

    report = (run / "data_report.txt").read_text(encoding="utf-8")
    assert "kept 80 + truncated 0 + dropped 3 = 83 rows" in report
    assert f"{table}:82: unknown label: label 'neutral' is not in method.labels (negative, positive)" in report
    assert f"{table}:83: empty text" in report and f"{table}:84: missing label" in report
    checked = io.StringIO()  # `tuneforge data validate` reads the rows as the method does
    with contextlib.redirect_stdout(checked), contextlib.redirect_stderr(io.StringIO()):
        assert main(["data", "validate", str(tmp_path / "config.yaml")]) == 1
    assert f"{table}:83: empty text" in checked.getvalue() and f"{table}:84: missing label" in checked.getvalue()
    scores = json.loads((run / "eval" / "classification.json").read_text(encoding="utf-8"))
    assert scores["samples"] == 20 and scores["accuracy"] >= 0.9, scores
    assert printed_scores(output) == as_printed(scores)
    assert (run / "model" / "model.safetensors").is_file() and (
        run / "model" / "classification_head.safetensors"
    ).is_file()
