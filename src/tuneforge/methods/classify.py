"""Sequence classification: a class for a whole text, e.g. sentiment, topic or intent, learnt from labelled rows.

`method: {name: classify, labels: [negative, positive]}` trains on rows of a text and its label (CSV, JSONL,
Parquet: {"text": "Great film!", "label": "positive"}; the label a name or an integer id into `labels`; other
column names through `data.columns: {text: review, label: sentiment}`). Without `labels` the classes are the
distinct labels of the training data, sorted (integer ids numerically). A row whose label is not a class, with an
empty text or without a label is dropped, counted and located (file:line) in the data report.

The text is tokenised as a text-classification pipeline does (the tokenizer's own special tokens, no chat
template). A linear head (hidden size → classes, no bias) on the final hidden state of the text's last token gives
the class logits; the loss is their cross-entropy, summed per text and divided by the texts of the step. The
model's adapter (LoRA, full fine-tuning, ...) trains along with the head. Each step and validation logs
`accuracy` and, for up to 16 classes, `f1/<class>`; at the end the validation split is scored in full (accuracy,
macro-F1, per-class precision/recall: `eval/classification.json`, the picture `eval/confusion_matrix.png`, a
table printed). The head and the class names are saved beside the model (`model/classification_head.safetensors`,
`model/classification.json`); `tuneforge export --format hf` writes them into the merged model as `score.weight`
and `id2label`/`label2id`, so that it loads with transformers' AutoModelForSequenceClassification.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from safetensors.torch import save_file

from tuneforge.atomic import atomic_write_text
from tuneforge.config.schema import MethodParams, RunConfig
from tuneforge.data.build import check_drop_ratio
from tuneforge.data.packing import collate_packed, collate_padded
from tuneforge.data.quality import DataReport, Problem
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.classify_export import HEAD_FILE, LABELS_FILE, export_classifier, read_head
from tuneforge.methods.classify_metrics import (
    classification_scores,
    confusion_matrix,
    plot_confusion,
    score_table,
)
from tuneforge.models.load import load_model

__all__ = [
    "HEAD_ATTRIBUTE",
    "ClassificationHead",
    "Classifier",
    "ClassifyParams",
    "attach_head",
    "class_logits",
    "classify_loss",
    "collate_classify",
    "collected_labels",
    "evaluate_classifier",
    "load_classifier",
    "predict_classes",
    "select_labelled",
]

HEAD_ATTRIBUTE = "tuneforge_classification_head"
PER_CLASS_METRICS = 16  # f1/<class> is logged per step for at most this many classes
_BATCH_KEYS = ("class_ids", "class_rows", "class_positions")


class ClassifyParams(MethodParams):
    """`method: {name: classify}`."""

    name: Literal["classify"] = Field("classify", description="Training method.")
    labels: list[str] | None = Field(
        None,
        description="The class names, in id order (a row's label is a name, or an integer id into this list when "
        "no name is a number); null: the distinct labels of the training data, sorted (saved with the model).",
    )

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        value = [str(name).strip() for name in value]
        if len(value) < 2 or any(not name for name in value):
            raise ValueError("method.labels needs at least 2 non-empty class names, e.g. [negative, positive]")
        repeated = sorted(name for name, count in Counter(value).items() if count > 1)
        if repeated:
            raise ValueError(f"method.labels names {', '.join(repeated)} more than once")
        return value


class ClassificationHead(torch.nn.Linear):
    """hidden size → one logit per class, no bias (the `score` layer of transformers' *ForSequenceClassification),
    with the class names it was made for."""

    def __init__(self, hidden_size: int, labels: list[str]) -> None:
        super().__init__(hidden_size, len(labels), bias=False)
        self.labels = list(labels)


def _config(model: Any) -> Any:
    return model.config if hasattr(model, "config") else model.get_base_model().config


def attach_head(model: Any, params: MethodParams) -> ClassificationHead:
    """Give `model` a trainable classification head for `params.labels` and return it.

    A run knows its labels by then (`select_labelled`); an estimate made before the data is read, where they may
    still be unknown, gets a head of two classes (its size hardly matters next to the model's)."""
    assert isinstance(params, ClassifyParams)
    labels = params.labels or ["0", "1"]
    config = _config(model)
    head = ClassificationHead(int(config.hidden_size), labels).to(next(model.parameters()).device)
    torch.nn.init.normal_(head.weight, std=float(getattr(config, "initializer_range", 0.02)))
    model.add_module(HEAD_ATTRIBUTE, head)
    return head


# ------------------------------------------------------------------------------------------------ labels


def _is_integer(name: str) -> bool:
    return name.lstrip("-").isdigit()


def collected_labels(samples: list[RenderedSample]) -> list[str]:
    """The distinct classes of `samples`, sorted: integer ids numerically, then names alphabetically."""
    names = {s.category for s in samples if s.category is not None}
    return sorted(names, key=lambda name: (0, int(name), "") if _is_integer(name) else (1, 0, name))


def _class_id(category: str | None, index: dict[str, int], by_id: bool) -> int | None:
    if category in index:
        return index[category]
    if by_id and category is not None and _is_integer(category) and 0 <= int(category) < len(index):
        return int(category)
    return None


def _unknown(names: list[str], given: bool, by_id: bool) -> str:
    """Why a label is no class (what follows "label 'x'" in the data report)."""
    listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if by_id:
        return f"is not in method.labels ({listed}) nor an id 0-{len(names) - 1}"
    if given:
        return f"is not in method.labels ({listed})"
    return f"does not occur in the training data ({listed}); set method.labels to name every class"


def select_labelled(
    config: RunConfig, train: list[RenderedSample], val: list[RenderedSample], report: DataReport
) -> tuple[list[RenderedSample], list[RenderedSample]]:
    """Give every sample its class id (in its last label); drop those whose label is no class, counted and located.

    Without method.labels the classes come from the training data, and method.labels is set to them.
    """
    params = config.method
    assert isinstance(params, ClassifyParams)
    given = params.labels is not None
    names = list(params.labels) if params.labels is not None else collected_labels(train)
    if len(names) < 2:
        raise UserError(
            f"classification needs at least 2 classes, but the training data has only {names or 'no label'}; "
            "add rows of the other classes"
        )
    index = {name: i for i, name in enumerate(names)}
    by_id = given and not any(_is_integer(name) for name in names)  # with classes named 1..5, "0" is no class
    unknown = _unknown(names, given, by_id)
    kept_train = _keep_known(train, index, by_id, unknown, report, counted=True)
    kept_val = _keep_known(val, index, by_id, unknown, report, counted=not config.data.eval)
    check_drop_ratio(report, config.data.max_drop_ratio)
    if not kept_train:
        raise UserError(f"no training samples left: no row has a label of {', '.join(names)}")
    counts = Counter(s.labels[-1] for s in kept_train)
    report.notes.append("classes (training samples): " + ", ".join(f"{n} {counts[i]}" for i, n in enumerate(names)))
    params.labels = names
    return kept_train, kept_val


def _keep_known(
    samples: list[RenderedSample],
    index: dict[str, int],
    by_id: bool,
    unknown: str,
    report: DataReport,
    counted: bool,
) -> list[RenderedSample]:
    """The samples with a known class, their class id set; the others dropped into `report`.

    `counted`: the samples are among the report's rows (else they are separate validation data: listed only)."""
    kept, apart = [], 0
    for sample in samples:
        class_id = _class_id(sample.category, index, by_id)
        if class_id is None:
            detail = f"label {sample.category!r} {unknown}"
            if counted:
                report.unkeep(sample, "unknown label", detail)
            else:
                report.issues.append(Problem(sample.source, "unknown label", detail))
                apart += 1
            continue
        sample.labels = [IGNORE_INDEX] * (len(sample.input_ids) - 1) + [class_id]
        kept.append(sample)
    if apart:
        report.notes.append(f"validation data (data.eval): dropped {apart} rows with an unknown label (listed below)")
    return kept


# ------------------------------------------------------------------------------------------------ training


def collate_classify(samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
    """Model inputs (one packed row, or a padded batch) plus each text's class id and the place of its last token."""
    lengths = torch.tensor([len(s.input_ids) for s in samples])
    if packing:
        batch = collate_packed(samples)
        rows, positions = torch.zeros_like(lengths), lengths.cumsum(0) - 1
    else:
        batch = collate_padded(samples, pad_id)
        rows, positions = torch.arange(len(samples)), lengths - 1
    del batch["targets"]
    # a sample select_labelled has not seen (e.g. in `tuneforge estimate`) has no class id: it takes no loss
    class_ids = torch.tensor([s.labels[-1] if s.labels else IGNORE_INDEX for s in samples])
    batch.update(class_ids=class_ids, class_rows=rows, class_positions=positions)
    return batch


def count_texts(batch: Batch) -> int:
    """The unit of the loss and metrics: texts (with a class id)."""
    return int((batch["class_ids"] != IGNORE_INDEX).sum())


def class_logits(model: Any, batch: Batch) -> torch.Tensor:
    """Class logits (texts × classes, float32) of a batch from `collate_classify` (one forward pass)."""
    head = getattr(model, HEAD_ATTRIBUTE, None)
    if head is None:
        raise UserError("this model has no classification head: train it with method.name=classify")
    inputs = {key: value for key, value in batch.items() if key not in _BATCH_KEYS}
    out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1]
    offset = hidden.shape[1] - batch["input_ids"].shape[1]  # virtual tokens in front (prompt learning)
    pooled = hidden[batch["class_rows"], batch["class_positions"] + offset]
    return head(pooled.to(head.weight.dtype)).float()


def classify_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """Summed cross-entropy over the texts; metrics: accuracy and, for a few classes, each one's F1."""
    assert isinstance(params, ClassifyParams)
    logits = class_logits(model, batch)
    targets = batch["class_ids"]
    loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE_INDEX)
    labelled = targets != IGNORE_INDEX
    logits, targets = logits.detach()[labelled], targets[labelled]
    predicted = logits.argmax(dim=-1)
    metrics: dict[str, Any] = {"accuracy": float((predicted == targets).sum())}
    labels = params.labels or []
    if len(labels) <= PER_CLASS_METRICS:
        for class_id, name in enumerate(labels):
            tp = float(((predicted == class_id) & (targets == class_id)).sum())
            wrong = float(((predicted == class_id) != (targets == class_id)).sum())  # false positives + negatives
            metrics[f"f1/{name}"] = (2 * tp, 2 * tp + wrong)
    return LossSums(loss, metrics)


def save_head(model: Any, folder: Path) -> None:
    """Write the head and its class names beside the saved model."""
    head = getattr(model, HEAD_ATTRIBUTE)
    save_file({"weight": head.weight.detach().float().cpu().contiguous()}, str(folder / HEAD_FILE))
    record = {"labels": head.labels, "hidden_size": head.in_features}
    atomic_write_text(folder / LABELS_FILE, json.dumps(record, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_classes(model: Any, samples: list[RenderedSample], batch_size: int = 16) -> list[int]:
    """The predicted class id of every sample, in order (padded batches of similar lengths)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    predicted = [0] * len(samples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_classify([samples[i] for i in chunk], False, 0)
        logits = class_logits(model, {key: value.to(device) for key, value in batch.items()})
        for i, class_id in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
            predicted[i] = class_id
    model.train(was_training)
    return predicted


def evaluate_classifier(model: Any, samples: list[RenderedSample], params: MethodParams, folder: Path) -> list[str]:
    """Score the validation samples: eval/classification.json and eval/confusion_matrix.png; the printed table."""
    assert isinstance(params, ClassifyParams)
    if not samples:
        return ["classification: no validation samples to score (set data.val_size > 0 or give data.eval)"]
    labels = list(params.labels or [])
    predicted = predict_classes(model, samples)
    confusion = confusion_matrix([s.labels[-1] for s in samples], predicted, len(labels))
    scores = classification_scores(confusion, labels)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "classification.json", json.dumps(scores, indent=2, ensure_ascii=False))
    picture = folder / "confusion_matrix.png"
    title = f"{len(samples)} validation samples: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}"
    plot_confusion(confusion, labels, picture, title)
    return [*score_table(scores), f"  scores: {folder / 'classification.json'}   confusion matrix: {picture}"]


@dataclass
class Classifier:
    """A trained classifier: `predict(texts)` gives each text's class name, `probabilities(texts)` all of them."""

    model: Any
    tokenizer: Any
    labels: list[str]

    @torch.no_grad()
    def probabilities(self, texts: list[str]) -> list[dict[str, float]]:
        """Each text's probability of every class, by class name."""
        samples = []
        for text in texts:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            samples.append(RenderedSample(ids, [IGNORE_INDEX] * (len(ids) - 1) + [0], kind="classify"))
        device = next(self.model.parameters()).device
        batch = collate_classify(samples, False, 0)
        logits = class_logits(self.model, {key: value.to(device) for key, value in batch.items()})
        return [dict(zip(self.labels, row, strict=True)) for row in torch.softmax(logits, dim=-1).tolist()]

    def predict(self, texts: list[str]) -> list[str]:
        """Each text's most likely class."""
        return [max(row, key=row.__getitem__) for row in self.probabilities(texts)]


def load_classifier(run_dir: str | Path) -> Classifier:
    """The classifier of a `method.name=classify` run directory (its model, adapter and head)."""
    weight, labels = read_head(Path(run_dir) / "model")
    loaded = load_model(str(run_dir))
    head = attach_head(loaded.model, ClassifyParams(labels=labels))
    head.weight.data.copy_(weight)
    loaded.model.eval()
    return Classifier(loaded.model, loaded.tokenizer, labels)


register_method(
    "classify",
    Method(
        params=ClassifyParams,
        data_kinds=frozenset({"classify"}),
        collate=collate_classify,
        loss=classify_loss,
        count=count_texts,
        metrics=("accuracy",),
        prepare=attach_head,
        save=save_head,
        data_format="classification",
        select_data=select_labelled,
        final_eval=evaluate_classifier,
        export=export_classifier,
    ),
)
