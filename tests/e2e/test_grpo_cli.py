"""End-to-end: `tuneforge train` with `method: {name: grpo}` on a tiny model and the bundled arithmetic prompts.

A rule reward the tiny random model can learn in a few steps, `length` towards answers that are empty once
stripped (it already starts many answers with newlines), must rise clearly; the run must finish and reload. A run
resumed from a checkpoint must repeat the uninterrupted run exactly, sampled answers included (the checkpoint
carries the random generator's state; LoRA dropout draws from it too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import read_metrics, run_cli, write_config
from safetensors.torch import load_file

BUNDLED = Path("arithmetic_train")  # a bundled dataset name, not a file
SHORT = {"name": "length", "target": 0, "scale": 8}
METHOD = {"name": "grpo", "num_generations": 4, "max_new_tokens": 8, "rewards": [SHORT]}
DATA = {"val_size": 0, "cutoff_len": 128}
TRAIN = {"batch_size": 2, "grad_accum": 1, "scheduler": "constant", "warmup_ratio": 0.0, "num_threads": 2}
LEARN_STEPS = 16


def grpo_config(work: Path, model_dir: Path, name: str, adapter: dict[str, Any], **train: Any) -> Path:
    return write_config(
        work / f"{name}.yaml",
        model_dir,
        BUNDLED,
        work / name,
        method=METHOD,
        data=DATA,
        adapter=adapter,
        train={**TRAIN, **train},
    )


def train_together(configs: list[Path], cwd: Path) -> None:
    """`tuneforge train CONFIG` for each config, all at once (each with its own fixed thread count)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tuneforge.cli.main", "train", str(config)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for config in configs
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpo")


@pytest.fixture(scope="module")
def learned(work: Path, tiny_llama_dir: Path) -> Path:
    """A full fine-tuning run (its reference is a frozen copy of the base) rewarding short answers."""
    config = grpo_config(work, tiny_llama_dir, "learn", {"name": "full"}, max_steps=LEARN_STEPS, learning_rate=1e-3)
    result = run_cli("train", str(config), cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "learn"


def test_the_reward_rises(learned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read_metrics(learned)
    assert [r["step"] for r in records] == list(range(1, LEARN_STEPS + 1))
    for record in records:
        assert {"loss", "reward", "reward_std", "kl", "answer_tokens", "reward_length"} <= record.keys()
        assert record["reward"] == pytest.approx(record["reward_length"])  # one reward, weight 1
        assert 1 <= record["answer_tokens"] <= METHOD["max_new_tokens"] and record["kl"] >= 0
    rewards = [r["reward"] for r in records]
    first, last = mean(rewards[:4]), mean(rewards[-4:])
    with capsys.disabled():
        print(f"\n  grpo reward over {LEARN_STEPS} steps: {' '.join(f'{r:.2f}' for r in rewards)}")
        print(f"  mean of the first 4 steps {first:.2f}, of the last 4 steps {last:.2f}")
    assert last >= first + 0.3 and last >= 0.6, rewards
    assert records[0]["kl"] == 0.0 and records[-1]["kl"] > 0  # the policy left the reference


def test_the_run_finishes_and_reloads(learned: Path) -> None:
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    status = json.loads((learned / "run.json").read_text())
    assert status["status"] == "finished" and status["steps"] == LEARN_STEPS
    loaded = load_model(str(learned))
    question = [{"role": "user", "content": "What is 6 + 7? Answer with the number only."}]
    reply = generate_replies(loaded.model, loaded.tokenizer, [question], max_new_tokens=8)[0]
    assert len(reply.text) < 8, reply  # it learned short answers


LORA = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.1}
RESUME = {"max_steps": 8, "save_steps": 3, "learning_rate": 3e-3, "deterministic": True}


def test_a_resumed_run_repeats_the_uninterrupted_run_exactly(
    work: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = grpo_config(work, tiny_llama_dir, "whole", LORA, **RESUME)
    # the same run stopped after 7 steps (the constant schedule does not depend on max_steps), checkpoints at 3 and 6
    stopped = grpo_config(work, tiny_llama_dir, "stopped", LORA, **{**RESUME, "max_steps": 7})
    train_together([whole, stopped], work)
    checkpoint = work / "stopped" / "checkpoints" / "step-6"
    resumed = grpo_config(work, tiny_llama_dir, "resumed", LORA, **RESUME)
    result = run_cli("train", str(resumed), "--resume", str(checkpoint), cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads((work / "resumed" / "run.json").read_text())["resumed_from_step"] == 6

    got, want = read_metrics(work / "resumed"), read_metrics(work / "whole")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 9))
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "reward", "reward_std", "kl", "answer_tokens"):
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)
    assert len({r["reward"] for r in want}) > 1  # the sampled answers did differ from step to step
    weights = load_file(str(work / "resumed" / "model" / "adapter_model.safetensors"))
    expected = load_file(str(work / "whole" / "model" / "adapter_model.safetensors"))
    assert weights.keys() == expected.keys()
    difference = max(float((weights[k] - expected[k]).abs().max()) for k in weights)
    assert difference <= 1e-6
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # it did train
    with capsys.disabled():
        print(f"\n  grpo resumed from step 6: same losses and rewards, max abs weight difference {difference:.3g}")
