"""Multiple-choice benchmarks scored by the log-likelihood of each option's letter, with few-shot prompting.

Reads the local file layouts of MMLU (`test/<subject>_test.csv`, `dev/<subject>_dev.csv`, no header), C-Eval
(`val/<subject>_val.csv`, `dev/...`, header id,question,A,B,C,D,answer,...) and CMMLU (`test/<subject>.csv`,
`dev/<subject>.csv`, header ,Question,A,B,C,D,Answer). The question (after k solved examples from the dev split,
given as earlier chat turns) is rendered with the model's chat template; the model's next-token log-probabilities
of "A".."D" at the start of its answer pick its choice. Accuracy is reported per subject and overall.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.render import render_text
from tuneforge.errors import UserError
from tuneforge.progress import progress_bar

__all__ = ["Item", "letter_ids", "load_benchmark", "score_benchmark"]

LETTERS = ("A", "B", "C", "D")
_SUFFIXES = ("_test", "_val", "_dev")


@dataclass
class Item:
    """One multiple-choice question."""

    question: str
    options: list[str]
    answer: str
    subject: str


def _rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    if "question" in header and "answer" in header:
        return [dict(zip(header, row, strict=False)) for row in rows[1:] if row]
    names = ["question", "a", "b", "c", "d", "answer"]
    return [dict(zip(names, row, strict=False)) for row in rows if len(row) >= 6]


def _subject(path: Path) -> str:
    stem = path.stem
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def _items(path: Path) -> list[Item]:
    items = []
    for number, row in enumerate(_rows(path), start=1):
        answer = (row.get("answer") or "").strip().upper()
        if answer not in LETTERS:
            raise UserError(f"{path}: question {number} has answer {row.get('answer')!r}; expected one of A, B, C, D")
        options = [(row.get(letter.lower()) or "").strip() for letter in LETTERS]
        items.append(Item((row.get("question") or "").strip(), options, answer, _subject(path)))
    return items


def _split_dir(root: Path, split: str | None) -> Path:
    for name in [split] if split else ["test", "val"]:
        folder = root / name
        if folder.is_dir() and any(folder.glob("*.csv")):
            return folder
    raise UserError(f"{root}: no {split or 'test/ or val/'} folder of CSV files (MMLU, C-Eval or CMMLU layout)")


def load_benchmark(
    root: Path, split: str | None = None, subjects: list[str] | None = None
) -> tuple[list[Item], dict[str, list[Item]]]:
    """(items to score, dev examples per subject) from a benchmark folder."""
    folder = _split_dir(root, split)
    files = sorted(folder.glob("*.csv"))
    if subjects:
        files = [f for f in files if _subject(f) in subjects]
        missing = set(subjects) - {_subject(f) for f in files}
        if missing:
            raise UserError(f"{folder}: no file for subject(s) {', '.join(sorted(missing))}")
    items = [item for path in files for item in _items(path)]
    dev: dict[str, list[Item]] = {}
    for path in sorted((root / "dev").glob("*.csv")) if (root / "dev").is_dir() else []:
        dev[_subject(path)] = _items(path)
    return items, dev


def _block(item: Item) -> str:
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.options, strict=True))
    return f"{item.question}\n{options}\nAnswer:"


def _conversation(item: Item, shots: list[Item]) -> list[dict[str, str]]:
    intro = f"The following are multiple choice questions about {item.subject.replace('_', ' ')}. Answer with the letter.\n\n"
    messages: list[dict[str, str]] = []
    for index, shot in enumerate(shots):
        messages += [
            {"role": "user", "content": (intro if index == 0 else "") + _block(shot)},
            {"role": "assistant", "content": shot.answer},
        ]
    messages.append({"role": "user", "content": (intro if not shots else "") + _block(item)})
    return messages


def letter_ids(tokenizer: Any) -> list[int]:
    """The token id of each answer letter as the first token of an answer."""
    ids = []
    for letter in LETTERS:
        encoded = tokenizer(letter, add_special_tokens=False)["input_ids"]
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise UserError("the tokenizer does not give the letters A-D distinct first tokens")
    return ids


@torch.inference_mode()
def _choices(model: Any, tokenizer: Any, texts: list[str], ids: list[int]) -> list[list[float]]:
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    logits = model(**encoded, use_cache=False, logits_to_keep=1).logits[:, -1, :].float()
    return torch.log_softmax(logits, dim=-1)[:, ids].tolist()


def score_benchmark(
    model: Any, tokenizer: Any, items: list[Item], dev: dict[str, list[Item]], shots: int = 5, batch_size: int = 8
) -> dict[str, Any]:
    """Accuracy overall and per subject, plus each item's choice and option log-probabilities."""
    ids = letter_ids(tokenizer)
    texts = [render_text(tokenizer, _conversation(i, dev.get(i.subject, [])[:shots]), generation=True) for i in items]
    was_training = model.training
    model.eval()
    results = []
    with progress_bar("multiple choice", total=len(items)) as advance:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            for item, logprobs in zip(
                chunk, _choices(model, tokenizer, texts[start : start + batch_size], ids), strict=True
            ):
                choice = LETTERS[max(range(len(LETTERS)), key=lambda k: logprobs[k])]
                results.append(
                    {"subject": item.subject, "answer": item.answer, "choice": choice, "logprobs": logprobs}
                )
            advance(len(chunk))
    model.train(was_training)
    per_subject: dict[str, list[int]] = {}
    for row in results:
        slot = per_subject.setdefault(row["subject"], [0, 0])
        slot[0] += row["choice"] == row["answer"]
        slot[1] += 1
    correct = sum(c for c, _ in per_subject.values())
    return {
        "accuracy": correct / max(len(results), 1),
        "items": len(results),
        "shots": shots,
        "per_subject": {s: {"accuracy": c / n, "items": n} for s, (c, n) in sorted(per_subject.items())},
        "results": results,
    }
