"""Helpers of the web UI tests: a workspace holding the tiny test model and small data files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e2e.cli_helpers import MEMORISE, write_memorisation_set


def make_workspace(root: Path, model_dir: Path) -> Path:
    """root/models/tiny (a copy of the tiny model); in root/data: memorise.jsonl (chat), pairs.jsonl (preference
    pairs) and questions.json (two before/after questions)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, root / "models" / "tiny")
    write_memorisation_set(root / "data" / "memorise.jsonl")
    pairs = [{"prompt": q, "chosen": a, "rejected": "I do not know."} for q, a in MEMORISE]
    (root / "data" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    questions = [question for question, _ in MEMORISE[:2]]
    (root / "data" / "questions.json").write_text(json.dumps(questions), encoding="utf-8")
    return root
