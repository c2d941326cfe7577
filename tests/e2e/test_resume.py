"""End-to-end: runs that survive. A run killed with SIGKILL mid-epoch and resumed with `--resume` ends with the
same weights and per-step losses as an uninterrupted run; Ctrl-C saves a checkpoint and says how to resume;
early stopping ends with the best checkpoint's weights."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from cli_helpers import (
    launch,
    newest_checkpoint,
    read_metrics,
    run_cli,
    wait_for_checkpoint,
    write_config,
    write_memorisation_set,
)
from safetensors.torch import load_file

# 8 rows, 2 for validation: 6 steps per epoch at batch 1; checkpoints every 5 steps never fall on an epoch end
# before step 30. LoRA dropout draws from the RNG every step, so the RNG states must be restored too.
RUN = {
    "max_steps": 28,
    "batch_size": 1,
    "save_steps": 5,
    "learning_rate": 1.0e-2,
    "warmup_steps": 3,
    "weight_decay": 0.1,
    "layer_lr_decay": 0.8,
    "deterministic": True,
}
ADAPTER = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.1}
DATA = {"val_size": 2, "packing": False}


def config_for(work: Path, model_dir: Path, name: str, **train) -> Path:
    data = write_memorisation_set(work / "memorise.jsonl")
    return write_config(
        work / f"{name}.yaml", model_dir, data, work / name, train={**RUN, **train}, adapter=ADAPTER, data=DATA
    )


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "adapter_model.safetensors"))


def assert_same_run(run_dir: Path, reference: Path) -> float:
    """Same per-step losses (no step twice) and the same final weights; returns the max abs weight difference."""
    got, want = read_metrics(run_dir), read_metrics(reference)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, RUN["max_steps"] + 1))
    for a, b in zip(got, want, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a, b)
        assert (a.get("val_loss") is None) == (b.get("val_loss") is None)
        if a.get("val_loss") is not None:
            assert abs(a["val_loss"] - b["val_loss"]) <= 1e-6, (a, b)
    weights, expected = adapter_weights(run_dir), adapter_weights(reference)
    assert weights.keys() == expected.keys()
    difference = max(float((weights[k] - expected[k]).abs().max()) for k in weights)
    assert difference <= 1e-6
    return difference


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(work: Path, tiny_llama_dir: Path) -> Path:
    """The uninterrupted run."""
    result = run_cli("train", str(config_for(work, tiny_llama_dir, "reference")), cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "reference"


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(work, tiny_llama_dir, reference, capsys):
    config = config_for(work, tiny_llama_dir, "killed")
    run_dir = work / "killed"
    process = launch(config, work)
    wait_for_checkpoint(run_dir, 10, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert status(run_dir)["status"] == "running"  # it never got to record anything else
    newest = newest_checkpoint(run_dir)
    state = json.loads((newest / "trainer_state.json").read_text())
    assert 10 <= state["step"] < RUN["max_steps"] and state["data"]["index"] != 0  # mid-epoch
    assert len(read_metrics(run_dir)) > 0

    again = run_cli("train", str(config), cwd=work)
    assert again.returncode == 2 and "add --resume" in again.stderr
    changed = run_cli("train", str(config), "adapter.r=4", "train.batch_size=2", "--resume", cwd=work)
    assert changed.returncode == 2
    assert "adapter, train.batch_size changed" in changed.stderr and "--force" in changed.stderr

    resumed = run_cli("train", str(config), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {newest}" in " ".join(resumed.stderr.split())
    assert status(run_dir)["status"] == "finished" and status(run_dir)["resumed_from_step"] == state["step"]
    difference = assert_same_run(run_dir, reference)
    with capsys.disabled():
        print(f"\n  resumed from step {state['step']}: max abs weight difference {difference:.3g}")

    finished = run_cli("train", str(config), "--resume", cwd=work)
    assert finished.returncode == 2 and "finished run" in finished.stderr and "nothing to resume" in finished.stderr


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(work, tiny_llama_dir, reference):
    config = config_for(work, tiny_llama_dir, "interrupted")
    run_dir = work / "interrupted"
    process = launch(config, work)
    wait_for_checkpoint(run_dir, 5, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    text = " ".join(stderr.split())
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = int(text.split("interrupted after step ")[1].split(";")[0])
    assert 5 <= step < RUN["max_steps"]
    assert f"checkpoint saved to {run_dir / 'checkpoints' / f'step-{step}'}" in text
    assert f"continue with: tuneforge train {config} --resume" in text
    assert (run_dir / "checkpoints" / f"step-{step}" / "trainer_state.json").is_file()
    assert status(run_dir)["status"] == "interrupted"

    resumed = run_cli("train", str(config), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, reference)


def test_early_stopping_restores_the_best_checkpoint(work, tiny_llama_dir):
    data = write_memorisation_set(work / "memorise.jsonl")
    train = {
        "max_steps": 40,
        "batch_size": 2,
        "learning_rate": 1.0e-3,  # high for full fine-tuning of 6 rows: validation loss turns within 10 steps
        "scheduler": "constant",
        "warmup_ratio": 0.0,
        "eval_steps": 1,
        "early_stopping_patience": 2,
        "save_total_limit": 1,
    }
    config = write_config(
        work / "es.yaml", tiny_llama_dir, data, work / "es", train=train, adapter={"name": "full"}, data=DATA
    )
    result = run_cli("train", str(config), cwd=work)
    assert result.returncode == 0, result.stderr
    run_dir = work / "es"
    record = status(run_dir)
    assert record["stopped_early"] and record["restored_best"]
    best, steps = record["best_step"], record["steps"]
    assert best < steps < 40
    val = {r["step"]: r["val_loss"] for r in read_metrics(run_dir) if r.get("val_loss") is not None}
    assert min(val, key=val.get) == best and val[best] == record["best_val_loss"]
    assert steps == best + 2 and val[steps] > val[best] and val[best + 1] > val[best]  # two evaluations, no better
    assert record["verdict"]["kind"] == "overfitting"
    assert f"at step {best}" in (run_dir / "README.md").read_text()
    assert f"at step {best}" in " ".join(result.stderr.split())

    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    assert f"step-{best}" in kept  # save_total_limit=1 keeps the newest and, besides it, the best
    checkpoint = load_file(str(run_dir / "checkpoints" / f"step-{best}" / "trainable.safetensors"))
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    for name, tensor in checkpoint.items():
        assert torch.equal(saved[name], tensor), name
