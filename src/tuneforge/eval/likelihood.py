"""Forgetting measured by likelihood: the per-token loss of the base and the tuned model on general answers
written by people (the bundled general_reference, or any dataset file).

Unlike scoring generated answers, this does not depend on how long or in what format a model answers: both
models read the same human-written answers, token for token, and the mean loss per answer token says how much
less likely the tuned model finds ordinary good answers. The end-of-turn marker the chat template adds after an
answer is left out: whether a model ends its answers there is format, not knowledge (a tuned model that learned to
stop would otherwise look better on every answer). A rise beyond the threshold is forgetting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DataSection
from tuneforge.data.build import build_dataset
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.eval.perplexity import loss_and_perplexity

__all__ = ["LikelihoodCheck", "reference_samples", "score_likelihood"]


@dataclass
class LikelihoodCheck:
    """Mean loss per answer token of the base and the tuned model on the same reference answers."""

    source: str
    base_loss: float
    tuned_loss: float
    items: int
    tokens: int
    threshold: float

    @property
    def rise(self) -> float:
        """How much the loss per token rose (negative: the tuned model finds the answers more likely)."""
        return self.tuned_loss - self.base_loss

    @property
    def forgot(self) -> bool:
        return self.rise > self.threshold

    def as_dict(self) -> dict[str, Any]:
        """The record written to compare.json."""
        return {
            "source": self.source,
            "base_loss": self.base_loss,
            "tuned_loss": self.tuned_loss,
            "rise": self.rise,
            "base_perplexity": math.exp(min(self.base_loss, 50.0)),
            "tuned_perplexity": math.exp(min(self.tuned_loss, 50.0)),
            "items": self.items,
            "tokens": self.tokens,
            "threshold": self.threshold,
            "forgot": self.forgot,
        }

    def summary(self) -> str:
        """One line: 'loss per token on 48 human-written answers (2,210 tokens): base 2.310 → tuned 2.334 (...)'."""
        verdict = (
            "forgetting: the tuned model finds ordinary answers less likely; lower train.learning_rate or "
            "train.epochs, or mix in general data"
            if self.forgot
            else "no forgetting beyond the threshold"
        )
        return (
            f"loss per token on {self.items} human-written answers ({self.tokens:,} tokens, {self.source}): "
            f"base {self.base_loss:.3f} → tuned {self.tuned_loss:.3f} ({self.rise:+.3f}, threshold "
            f"{self.threshold:g}): {verdict}"
        )


def reference_samples(
    entry: str, tokenizer: Any, variables: dict[str, str], base_dir: Path | None, cutoff_len: int = 1024
) -> list[RenderedSample]:
    """The reference conversations rendered with the model's chat template, loss on the answers only."""
    section = DataSection(
        train=[entry], val_size=0, cutoff_len=cutoff_len, variables=variables, max_drop_ratio=1.0, dedup="none",
        cache=False, shuffle=False,
    )  # fmt: skip
    prepared, _ = build_dataset(section, tokenizer, 0, base_dir)
    if not prepared.train:
        raise UserError(f"eval.general_reference {entry!r}: no usable answer ({prepared.report.summary()})")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [_without_end_of_turn(sample, special, tokenizer) for sample in prepared.train]


def _without_end_of_turn(sample: RenderedSample, special: set[int], tokenizer: Any) -> RenderedSample:
    """The sample with the template's end-of-turn tokens (special tokens, and the spacing after them at the end of
    the answer) no longer scored."""
    labels = list(sample.labels)
    position = len(labels)
    while position > 0 and (
        labels[position - 1] == IGNORE_INDEX
        or labels[position - 1] in special
        or not tokenizer.decode([labels[position - 1]]).strip()
    ):
        position -= 1
    labels[position:] = [IGNORE_INDEX] * (len(labels) - position)
    labels = [IGNORE_INDEX if label in special else label for label in labels]
    return replace(sample, labels=labels)


def score_likelihood(model: Any, samples: list[RenderedSample]) -> tuple[float, int]:
    """(mean loss per answer token, answer tokens) of `model` on the rendered reference samples."""
    result = loss_and_perplexity(model, samples)
    return float(result["loss"]), int(result["tokens"])
