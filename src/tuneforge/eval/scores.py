"""Reference-based scores: exact match, contains, ROUGE-1/2/L and BLEU-4, for English and Chinese alike.

Tokenisation: lower-cased words and numbers for alphabetic scripts, and one token per character for Chinese,
Japanese and Korean text (which has no spaces between words), so the same scores work for both without a
segmenter. Every score is in [0, 1]; with several references a prediction gets its best score.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "bleu4",
    "contains",
    "corpus_bleu4",
    "exact_match",
    "normalise_answer",
    "rouge_l",
    "rouge_n",
    "tokenize",
]

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+(?:'[^\W{_CJK}_]+)?", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Words/numbers (lower case) and single CJK characters; punctuation and spaces dropped."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def normalise_answer(text: str) -> str:
    """The answer as its tokens joined by single spaces (case, punctuation and spacing ignored)."""
    return " ".join(tokenize(text))


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the prediction equals a reference after normalisation, else 0.0."""
    answer = normalise_answer(prediction)
    return float(any(answer == normalise_answer(ref) for ref in references))


def contains(prediction: str, references: Sequence[str]) -> float:
    """1.0 when a reference's tokens occur, in order and adjacent, within the prediction's tokens."""
    tokens = tokenize(prediction)
    for ref in references:
        wanted = tokenize(ref)
        if wanted and any(tokens[i : i + len(wanted)] == wanted for i in range(len(tokens) - len(wanted) + 1)):
            return 1.0
    return 0.0


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, predicted: int, reference: int) -> float:
    if overlap == 0 or predicted == 0 or reference == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: str, references: Sequence[str], n: int) -> float:
    """ROUGE-N F1: clipped n-gram overlap between prediction and reference."""
    pred = _ngrams(tokenize(prediction), n)
    best = 0.0
    for ref in references:
        gold = _ngrams(tokenize(ref), n)
        best = max(best, _f1(sum((pred & gold).values()), sum(pred.values()), sum(gold.values())))
    return best


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1: longest common subsequence of tokens."""
    pred = tokenize(prediction)
    return max((_f1(_lcs(pred, tokenize(ref)), len(pred), len(tokenize(ref))) for ref in references), default=0.0)


def _bleu_counts(pred: list[str], refs: list[list[str]]) -> tuple[list[int], list[int], int]:
    """Clipped matches and totals per n (1..4), and the closest reference length."""
    matches, totals = [], []
    for n in range(1, 5):
        counts = _ngrams(pred, n)
        best: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            best |= _ngrams(ref, n)
        matches.append(sum((counts & best).values()))
        totals.append(max(len(pred) - n + 1, 0))
    closest = min((abs(len(r) - len(pred)), len(r)) for r in refs)[1] if refs else 0
    return matches, totals, closest


def _bleu(matches: list[int], totals: list[int], pred_len: int, ref_len: int, smooth: bool) -> float:
    if pred_len == 0:
        return 0.0
    logs = []
    for n, (match, total) in enumerate(zip(matches, totals, strict=True), start=1):
        if smooth and n > 1:
            match, total = match + 1, total + 1
        if match == 0 or total == 0:
            return 0.0
        logs.append(math.log(match / total))
    brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return brevity * math.exp(sum(logs) / 4)


def bleu4(prediction: str, references: Sequence[str]) -> float:
    """Sentence BLEU-4 with add-one smoothing of the 2- to 4-gram precisions (Lin & Och 2004)."""
    pred = tokenize(prediction)
    matches, totals, closest = _bleu_counts(pred, [tokenize(r) for r in references])
    return _bleu(matches, totals, len(pred), closest, smooth=True)


def corpus_bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): n-gram counts and lengths summed over all answers, no smoothing."""
    matches, totals, pred_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for prediction, refs in zip(predictions, references, strict=True):
        pred = tokenize(prediction)
        m, t, closest = _bleu_counts(pred, [tokenize(r) for r in refs])
        matches = [a + b for a, b in zip(matches, m, strict=True)]
        totals = [a + b for a, b in zip(totals, t, strict=True)]
        pred_len, ref_len = pred_len + len(pred), ref_len + closest
    return _bleu(matches, totals, pred_len, ref_len, smooth=False)
