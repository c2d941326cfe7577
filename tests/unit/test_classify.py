"""Sequence classification: scores of known predictions, the table and picture, labels from rows, bad rows dropped
with their locations, and a loss that is the same packed or padded."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.config.load import config_from_dict
from tuneforge.config.schema import DataSection
from tuneforge.data.build import build_dataset
from tuneforge.data.quality import DataReport
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.methods.classify import (
    ClassifyParams,
    attach_head,
    classify_loss,
    collate_classify,
    collected_labels,
    predict_classes,
    select_labelled,
)
from tuneforge.methods.classify_metrics import (
    classification_scores,
    confusion_matrix,
    confusion_plot_pixels,
    plot_confusion,
    score_table,
)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# ------------------------------------------------------------------------------------------------ scores


TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDICTED = [0, 1, 0, 1, 2, 2, 2, 0, 2]


def test_confusion_counts_true_classes_down_and_predictions_across() -> None:
    assert confusion_matrix(TRUE, PREDICTED, 4) == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], 2)


def test_accuracy_macro_f1_and_per_class_scores_of_known_predictions() -> None:
    labels = ["cat", "dog", "fox", "owl"]  # owl: neither in the truth nor predicted, so not in the macro mean
    scores = classification_scores(confusion_matrix(TRUE, PREDICTED, 4), labels)
    assert scores["samples"] == 9
    assert scores["accuracy"] == 6 / 9
    # F1 per class: cat 2·2/(4+1+1) = 2/3, dog 2/(2+1+1) = 1/2, fox 6/(6+1+1) = 3/4; the mean of the three
    assert scores["macro_f1"] == pytest.approx(23 / 36, abs=1e-15)
    assert scores["per_class"] == {
        "cat": {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3, "predicted": 3},
        "dog": {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2, "predicted": 2},
        "fox": {"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4, "predicted": 4},
        "owl": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0},
    }
    # a class predicted but never true counts in the mean with F1 0; one true but never predicted likewise
    lopsided = classification_scores([[3, 1], [0, 0]], ["yes", "no"])
    assert lopsided["per_class"]["no"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1}
    assert lopsided["macro_f1"] == pytest.approx((6 / 7 + 0.0) / 2, abs=1e-15)
    assert lopsided["accuracy"] == 0.75


def test_the_table_prints_the_scores_to_four_places() -> None:
    scores = classification_scores(confusion_matrix(TRUE, PREDICTED, 3), ["cat", "dog", "fox"])
    assert score_table(scores) == [
        "classification of 9 validation samples: accuracy 0.6667, macro-F1 0.6389",
        "  label  precision  recall      f1  support",
        "  cat       0.6667  0.6667  0.6667        3",
        "  dog       0.5000  0.5000  0.5000        2",
        "  fox       0.7500  0.7500  0.7500        4",
    ]


def test_the_confusion_picture_grows_with_the_classes(tmp_path: Path) -> None:
    plot_confusion([[5, 1], [2, 7]], ["negative", "positive"], tmp_path / "two.png", "two classes")
    assert png_size(tmp_path / "two.png") == confusion_plot_pixels(2) == (520, 420)
    five = [[int(r == c) * 3 + (r + c) % 2 for c in range(5)] for r in range(5)]
    plot_confusion(five, ["a", "b", "c", "d", "a rather long class name"], tmp_path / "five.png", "five")
    assert png_size(tmp_path / "five.png") == confusion_plot_pixels(5) == (670, 570)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.png", "two.png"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ labels and rows


def test_labels_must_be_distinct_and_at_least_two() -> None:
    assert ClassifyParams(labels=[" neg ", "pos"]).labels == ["neg", "pos"]
    with pytest.raises(ValueError, match="more than once"):
        ClassifyParams(labels=["neg", "pos", "neg"])
    with pytest.raises(ValueError, match="at least 2"):
        ClassifyParams(labels=["only"])


def sample(category: str, source: str = "f.jsonl:1", ids: tuple[int, ...] = (5, 6, 7)) -> RenderedSample:
    return RenderedSample(list(ids), [IGNORE_INDEX] * len(ids), source=source, kind="classify", category=category)


def test_collected_labels_sort_ids_numerically_then_names() -> None:
    assert collected_labels([sample("10"), sample("2"), sample("0"), sample("2")]) == ["0", "2", "10"]
    assert collected_labels([sample("spam"), sample("ham"), sample("eggs")]) == ["eggs", "ham", "spam"]


def classify_config(tmp_path: Path, drop_ratio: float = 1.0, **method: object) -> object:
    return config_from_dict(
        {
            "method": {"name": "classify", **method},
            "data": {"max_drop_ratio": drop_ratio},
            "output": {"dir": str(tmp_path / "run")},
        }
    )


def test_without_labels_the_training_classes_are_used_and_other_validation_labels_dropped(tmp_path: Path) -> None:
    config = classify_config(tmp_path)
    train = [sample("pos", "t:1"), sample("neg", "t:2"), sample("pos", "t:3")]
    val = [sample("neg", "t:4"), sample("meh", "t:5")]
    report = DataReport(total=5, kept=5)
    kept_train, kept_val = select_labelled(config, train, val, report)
    assert config.method.labels == ["neg", "pos"]
    assert [s.labels for s in kept_train] == [[IGNORE_INDEX, IGNORE_INDEX, 1], [IGNORE_INDEX, IGNORE_INDEX, 0]] + [
        [IGNORE_INDEX, IGNORE_INDEX, 1]
    ]
    assert [s.source for s in kept_val] == ["t:4"]
    assert report.problems == [
        "t:5: unknown label: label 'meh' does not occur in the training data (neg, pos); set method.labels to "
        "name every class"
    ]
    assert report.kept == 4 and report.dropped == {"unknown label": 1} and report.balanced
    assert "classes (training samples): neg 1, pos 2" in report.notes
    # more unusable rows than data.max_drop_ratio allows stop the run, naming them
    train = [sample("pos", "t:1"), sample("neg", "t:2"), sample("pos", "t:3")]
    with pytest.raises(UserError, match=r"1 of 5 rows \(20.0%\) are unusable \(unknown label 1\).* t:5: unknown"):
        select_labelled(classify_config(tmp_path, 0.1), train, [sample("meh", "t:5")], DataReport(total=5, kept=5))


def test_ids_index_the_labels_unless_the_labels_are_numbers(tmp_path: Path) -> None:
    named = classify_config(tmp_path, labels=["neg", "pos"])
    kept, _ = select_labelled(named, [sample("1"), sample("neg"), sample("2", "t:3")], [], DataReport(total=3, kept=3))
    assert [s.labels[-1] for s in kept] == [1, 0]
    stars = classify_config(tmp_path, labels=["1", "2", "3"])
    report = DataReport(total=3, kept=3)
    kept, _ = select_labelled(stars, [sample("3"), sample("0", "t:2"), sample("1")], [], report)
    assert [s.labels[-1] for s in kept] == [2, 0]
    assert report.problems == ["t:2: unknown label: label '0' is not in method.labels (1, 2, 3)"]


def test_one_class_is_not_a_classification(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 2 classes, but the training data has only"):
        select_labelled(classify_config(tmp_path), [sample("pos"), sample("pos")], [], DataReport(total=2, kept=2))


def write_rows(folder: Path) -> tuple[Path, Path]:
    table = folder / "reviews.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "stars"])
        writer.writerows(
            [
                ["a great film", "positive"],  # line 2
                ["an awful film", "negative"],  # 3
                ["", "positive"],  # 4: empty text
                ["a so-so film", "neutral"],  # 5: not a class
                ["a fine film", ""],  # 6: no label
                ["a lovely film", "1"],  # 7: id 1 = positive
                ["a dull film", "0"],  # 8: id 0 = negative
                ["a film", "7"],  # 9: no class has id 7
            ]
        )
    lines = [
        {"review": "good acting", "stars": "positive"},  # 1
        {"review": "no label here"},  # 2: missing label
        {"stars": "negative"},  # 3: missing text
        {"review": 5, "stars": "negative"},  # 4: not a text
        {"review": "bad acting", "stars": True},  # 5: not a class name
        {"review": "bad plot", "stars": 0},  # 6: id 0
    ]
    rows = folder / "reviews.jsonl"
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return table, rows


def test_bad_rows_are_dropped_counted_and_located(tiny_llama_dir: Path, tmp_path: Path) -> None:
    table, rows = write_rows(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    data = DataSection(
        train=[str(table), str(rows)],
        format="classification",  # what method.name=classify reads data.format=auto as
        columns={"text": "review", "label": "stars"},
        val_size=0,
        max_drop_ratio=1.0,
        cache=False,
    )
    prepared, _ = build_dataset(data, tokenizer, 0)
    config = classify_config(tmp_path, labels=["negative", "positive"])
    train, _ = select_labelled(config, prepared.train, prepared.val, prepared.report)
    report = prepared.report
    dropped = sorted((p.where.rsplit("/", 1)[1], p.reason) for p in report.issues if p.dropped)
    assert dropped == [
        ("reviews.csv:4", "empty text"),
        ("reviews.csv:5", "unknown label"),
        ("reviews.csv:6", "missing label"),
        ("reviews.csv:9", "unknown label"),
        ("reviews.jsonl:2", "missing label"),
        ("reviews.jsonl:3", "missing field"),
        ("reviews.jsonl:4", "malformed field"),
        ("reviews.jsonl:5", "malformed field"),
    ]
    assert report.total == 14 and report.dropped_total == 8 and report.balanced
    by_text = {tokenizer.decode(s.input_ids): s.labels[-1] for s in train}
    assert by_text == {
        "a great film": 1,
        "an awful film": 0,
        "a lovely film": 1,
        "a dull film": 0,
        "good acting": 1,
        "bad plot": 0,
    }
    assert all(
        s.kind == "classify" and s.input_ids == tokenizer(t)["input_ids"] for t, s in zip(by_text, train, strict=False)
    )
    problems = "\n".join(report.problems)
    assert "label 'neutral' is not in method.labels (negative, positive) nor an id 0-1" in problems
    assert "no label in field 'stars'" in problems


def test_a_row_of_unknown_columns_is_refused_by_name(tmp_path: Path, tiny_llama_dir: Path) -> None:
    table, _ = write_rows(tmp_path)
    data = DataSection(train=[str(table)], format="classification", columns={"prompt": "review"}, cache=False)
    with pytest.raises(UserError, match="data.columns prompt: classification rows have the columns text and label"):
        build_dataset(data, AutoTokenizer.from_pretrained(tiny_llama_dir), 0)


# ------------------------------------------------------------------------------------------------ the loss


def test_the_loss_is_the_same_packed_or_padded_and_counts_texts(tiny_llama_dir: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    params = ClassifyParams(labels=["a", "b", "c"])
    attach_head(model, params)
    samples = []
    for index, ids in enumerate([(5, 9, 11, 40), (7, 8), (30, 31, 32, 33, 34, 35), (12,)]):
        item = sample(str(index), ids=ids)
        item.labels[-1] = index % 3
        samples.append(item)
    method = METHODS.get("classify")
    packed = collate_classify(samples, True, 0)
    padded = collate_classify(samples, False, 0)
    assert packed["class_positions"].tolist() == [3, 5, 11, 12] and padded["class_positions"].tolist() == [3, 1, 5, 0]
    assert method.count(packed) == method.count(padded) == 4
    with torch.no_grad():
        one = classify_loss(model, packed, params, None)
        other = classify_loss(model, padded, params, None)
        logits = [
            model.tuneforge_classification_head(
                model(torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states[-1][0, -1]
            )
            for s in samples
        ]
    expected = torch.nn.functional.cross_entropy(torch.stack(logits), torch.tensor([0, 1, 2, 0]), reduction="sum")
    assert float(one.loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(other.loss) == pytest.approx(float(expected), rel=1e-5)
    predicted = torch.stack(logits).argmax(-1).tolist()
    assert (
        one.metrics["accuracy"]
        == other.metrics["accuracy"]
        == sum(p == t for p, t in zip(predicted, [0, 1, 2, 0], strict=False))
    )
    assert predict_classes(model, samples, batch_size=3) == predicted
    for class_id, name in enumerate(["a", "b", "c"]):
        tp = sum(p == t == class_id for p, t in zip(predicted, [0, 1, 2, 0], strict=False))
        wrong = sum((p == class_id) != (t == class_id) for p, t in zip(predicted, [0, 1, 2, 0], strict=False))
        assert one.metrics[f"f1/{name}"] == (2 * tp, 2 * tp + wrong)


def test_a_cached_classification_sample_keeps_its_class(tmp_path: Path) -> None:
    from tuneforge.data.pipeline import PreparedData
    from tuneforge.data.sample_cache import load_prepared, save_prepared

    prepared = PreparedData([sample("positive", "a.csv:2")], [sample("7", "a.csv:3", ids=(9, 8))], DataReport())
    save_prepared(prepared, tmp_path / "x.samples")
    loaded = load_prepared(tmp_path / "x.samples")
    assert loaded is not None
    assert [(s.category, s.kind, s.source, s.input_ids) for s in loaded.train + loaded.val] == [
        ("positive", "classify", "a.csv:2", [5, 6, 7]),
        ("7", "classify", "a.csv:3", [9, 8]),
    ]
