"""Generation metrics on a dataset with references: each conversation's last assistant turn is the reference, the
model answers the turns before it (batched, greedy), and BLEU-4 and ROUGE-1/2/L are averaged over the answers."""

from __future__ import annotations

from typing import Any

from tuneforge.data.messages import Conversation
from tuneforge.eval.scores import bleu4, corpus_bleu4, rouge_l, rouge_n
from tuneforge.models.generate import generate_replies

__all__ = ["predict_and_score", "score_predictions"]


def score_predictions(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean sentence BLEU-4 and ROUGE-1/2/L F1 (in %, as LLaMA-Factory's predict mode reports), and corpus BLEU-4."""
    count = max(len(predictions), 1)
    pairs = list(zip(predictions, references, strict=True))
    return {
        "bleu-4": 100 * sum(bleu4(p, [r]) for p, r in pairs) / count,
        "rouge-1": 100 * sum(rouge_n(p, [r], 1) for p, r in pairs) / count,
        "rouge-2": 100 * sum(rouge_n(p, [r], 2) for p, r in pairs) / count,
        "rouge-l": 100 * sum(rouge_l(p, [r]) for p, r in pairs) / count,
        "corpus-bleu-4": 100 * corpus_bleu4(predictions, [[r] for r in references]),
    }


def predict_and_score(
    model: Any, tokenizer: Any, conversations: list[Conversation], max_new_tokens: int, batch_size: int | None = None
) -> tuple[dict[str, float], list[dict[str, str]]]:
    """(metrics, one {prompt, reference, prediction, source} row per conversation)."""
    usable = [c for c in conversations if c.kind in ("chat", "kto") and c.messages[-1].role == "assistant"]
    prompts = [[m.to_template() for m in c.messages[:-1]] for c in usable]
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size, description="predicting")
    predictions = [r.text for r in replies]
    references = [c.messages[-1].content for c in usable]
    rows = [
        {"source": c.source, "prompt": c.messages[-2].content, "reference": ref, "prediction": pred}
        for c, ref, pred in zip(usable, references, predictions, strict=True)
    ]
    return score_predictions(predictions, references), rows
