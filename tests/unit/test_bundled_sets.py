"""The bundled evaluation sets never overlap the bundled training data (or the check would be contaminated)."""

from __future__ import annotations

import json

from tuneforge.data.catalog import bundled_path
from tuneforge.data.quality import normalise_text


def _questions(name: str) -> list[str]:
    raw = json.loads(bundled_path(name).read_text(encoding="utf-8"))
    return [item if isinstance(item, str) else item.get("question") or item.get("instruction") for item in raw]


def test_general_check_has_at_least_50_items_in_three_categories():
    raw = json.loads(bundled_path("general_check").read_text(encoding="utf-8"))
    assert len(raw) >= 50
    categories = {item["category"] for item in raw}
    assert categories == {"arithmetic", "world knowledge", "instruction following"}
    assert all(item["expected"] and all(isinstance(e, str) and e for e in item["expected"]) for item in raw)


def test_evaluation_sets_share_no_question_with_training_sets():
    training = {normalise_text(q) for name in ("general_prompts", "identity") for q in _questions(name)}
    for name in ("general_check", "demo_questions"):
        overlap = [q for q in _questions(name) if normalise_text(q) in training]
        assert overlap == [], (name, overlap)
