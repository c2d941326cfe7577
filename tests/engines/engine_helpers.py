"""What the engine tests share: the rule for a missing engine (skip on a developer's machine, fail in CI), the
llama.cpp comparisons, and the bundled text the next-token agreement is measured on."""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

__all__ = ["agreement_text", "file_size", "require", "untied_variant"]


def require(available: bool, what: str, install: str) -> None:
    """Skip the test when `what` is missing, except in CI (CI=true), where the missing engine fails it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run this test: {install}")
    pytest.skip(f"{what} is not installed ({install}; in CI this fails)")


def agreement_text() -> str:
    """The bundled domain text (tuneforge/resources/data/domain_text.json) the agreement figures are measured on."""
    rows: list[Any] = json.loads(
        resources.files("tuneforge").joinpath("resources/data/domain_text.json").read_text(encoding="utf-8")
    )
    return "\n\n".join(row["text"] if isinstance(row, dict) else str(row) for row in rows)


def file_size(path: Path) -> str:
    """A size in MiB or KiB, for reports."""
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def untied_variant(src: Path, out: Path, seed: int = 1) -> Path:
    """The tiny model at `src` with an output matrix of its own (fresh random weights, same tokenizer) in `out`.

    A tiny random model whose output matrix is its embedding matrix mostly predicts the token it was given (greedy
    answers repeat one token); with its own output matrix it gives varied tokens, which makes engine comparisons
    meaningful, and the export writes the separate ``output.weight`` tensor.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True)
    for path in src.iterdir():
        if path.name.startswith("tokenizer") or path.name in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(path, out / path.name)
    config = AutoConfig.from_pretrained(src)
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.norm.weight.fill_(8.0)  # a realistic logit scale, as the tiny model fixtures set
    model.save_pretrained(out)
    return out
