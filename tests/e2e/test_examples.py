"""Every config in examples/ trains for 2 steps through the CLI, on a tiny model instead of its own.

Only what a tiny offline run cannot have is overridden: the model, the step count, the before/after questions,
self-replay (which generates with the base model first) and the output folder.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.cli.main import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, which also keeps them from fighting other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_adapter_and_method_examples_are_all_there() -> None:
    from tuneforge.methods import METHODS
    from tuneforge.models.adapters import ADAPTERS

    names = {path.name for path in EXAMPLES}
    assert "identity_demo.yaml" in names
    assert {f"adapter_{name}.yaml" for name in ADAPTERS.names()} <= names
    assert {f"method_{name}.yaml" for name in METHODS.names()} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_trains_for_two_steps(example: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    adapter = (yaml.safe_load(example.read_text(encoding="utf-8")).get("adapter") or {}).get("name", "lora")
    if adapter == "qlora" and not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA GPU")
    overrides = [
        f"model.name_or_path={tiny_llama_dir}",
        "train.max_steps=2",
        "eval.questions=null",
        f"output.dir={tmp_path / 'run'}",
        "data.replay=null",
    ]
    if "teacher" in (yaml.safe_load(example.read_text(encoding="utf-8")).get("method") or {}):
        overrides.append(f"method.teacher={tiny_llama_dir}")  # a teacher must share the student's tokenizer
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(example), *overrides])
    assert code == 0, console.getvalue()[-2000:]
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "finished" and status["steps"] == 2
    assert any((tmp_path / "run" / "model").glob("*.safetensors"))
