"""Fixtures of the web UI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from webui_helpers import make_workspace


@pytest.fixture
def workspace_dir(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """A workspace: models/tiny, data/memorise.jsonl (chat) and data/pairs.jsonl (preference pairs)."""
    return make_workspace(tmp_path / "ws", tiny_llama_dir)
