"""End-to-end: `method: {name: ppo}` on a tiny model: the mean reward of a rule the tiny model can learn rises, and
a run resumed from a checkpoint continues with the same adaptive KL coefficient and the same steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import read_metrics, run_cli, write_config

SHORT = {"name": "length", "target": 0, "scale": 8}
METHOD = {"name": "ppo", "max_new_tokens": 8, "kl_coef": 0.05, "target_kl": 0.5, "horizon": 20, "rewards": [SHORT]}
DATA = {"val_size": 0, "cutoff_len": 128, "max_samples": 64}
TRAIN = {"batch_size": 8, "grad_accum": 1, "scheduler": "constant", "warmup_ratio": 0.0, "learning_rate": 1.0e-3}


def ppo_config(work: Path, model_dir: Path, name: str, **train) -> Path:
    return write_config(
        work / f"{name}.yaml", model_dir, Path("arithmetic_train"), work / name,
        method=METHOD, data=DATA, adapter={"name": "full"}, train={**TRAIN, **train},
    )  # fmt: skip


def test_ppo_raises_the_reward_and_adapts_beta(tiny_llama_dir: Path, tmp_path: Path):
    result = run_cli("train", str(ppo_config(tmp_path, tiny_llama_dir, "run", max_steps=20)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_metrics(tmp_path / "run")
    rewards = [r["reward"] for r in records]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3 and last > 0.6, rewards
    betas = [r["kl_coef"] for r in records]
    assert betas[0] == pytest.approx(0.05) and betas[-1] != pytest.approx(0.05)  # the controller moved it
    assert all(r["value_loss"] >= 0 for r in records)


def test_a_resumed_ppo_run_continues_with_the_same_beta_and_steps(tiny_llama_dir: Path, tmp_path: Path):
    checkpoints = {"save_steps": 3, "deterministic": True}
    full = ppo_config(tmp_path, tiny_llama_dir, "full", max_steps=6, **checkpoints)
    assert run_cli("train", str(full), cwd=tmp_path).returncode == 0
    part = ppo_config(tmp_path, tiny_llama_dir, "part", max_steps=4, **checkpoints)
    assert run_cli("train", str(part), cwd=tmp_path).returncode == 0
    resumed = ppo_config(
        tmp_path,
        tiny_llama_dir,
        "resumed",
        max_steps=6,
        resume=str(tmp_path / "part/checkpoints/step-3"),
        **checkpoints,
    )
    result = run_cli("train", str(resumed), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    want, got = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in got] == list(range(1, 7))
    for a, b in zip(want, got, strict=True):
        for key in ("loss", "reward", "kl_coef", "value_loss"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), (key, a, b)
