"""End-to-end: runs that survive. A run killed with SIGKILL at three points (one of them mid-checkpoint-write)
and resumed with `--resume` ends with the same weights and per-step losses as an uninterrupted run; Ctrl-C and
SIGTERM save a checkpoint and say how to resume; the same deterministic config twice gives bit-identical losses;
early stopping ends with the best checkpoint's weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
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


def start_training(work: Path, config: Path, *args: str, stall: str | None = None) -> subprocess.Popen[str]:
    """`tuneforge train CONFIG ARGS` in the background, its output into files beside the config.

    With `stall` (e.g. "step-15") it runs on a disk that stalls after writing that checkpoint's weights: the
    process writes STALLED_MARK and sleeps mid-checkpoint, so that a test can kill it there.
    """
    command = [sys.executable, "-m", "tuneforge.cli.main", "train", str(config), *args]
    env = dict(os.environ)
    if stall is not None:
        script = work / "stalling_disk.py"
        script.write_text(STALLING_DISK, encoding="utf-8")
        command = [sys.executable, str(script), str(config), *args]
        env.update(STALL_AT=stall, STALLED_MARK=str(work / "stalled"))
        (work / "stalled").unlink(missing_ok=True)
    log = (work / f"{config.stem}.out").open("w")
    return subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


STALLING_DISK = """
import os, sys, time
from pathlib import Path

from tuneforge.cli.main import main
from tuneforge.train import checkpoint

real_save_file = checkpoint.save_file


def stalling_save_file(tensors, filename, *args, **kwargs):
    real_save_file(tensors, filename, *args, **kwargs)
    if Path(filename).parent.name.startswith("." + os.environ["STALL_AT"] + ".tmp-"):
        Path(os.environ["STALLED_MARK"]).write_text(str(filename))
        time.sleep(600)


checkpoint.save_file = stalling_save_file
sys.exit(main(["train", *sys.argv[1:]]))
"""


def logged_step(run_dir: Path) -> int:
    """The highest step in metrics.jsonl so far (0 when none)."""
    steps = [0]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue  # a line being written
    return max(steps)


def wait_until(ready, process: subprocess.Popen[str], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.005)


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.scenario("resume_sigkill")
def test_sigkill_at_3_random_points_then_resume_matches_the_uninterrupted_run(work, tiny_llama_dir, reference, capsys):
    # checkpoints every 5 steps; kill (1) between checkpoints, (2) mid-write of a checkpoint, (3) between again
    rng = random.Random(20250607)
    first, stalled = rng.randint(6, 9), rng.choice([10, 15])
    third = rng.randint(stalled + 1, 24)
    config = config_for(work, tiny_llama_dir, "killed")
    run_dir = work / "killed"

    process = start_training(work, config)
    wait_until(lambda: logged_step(run_dir) >= first, process, f"step {first}")
    kill(process)
    assert status(run_dir)["status"] == "running"  # it never got to record anything else
    newest = newest_checkpoint(run_dir)
    state = json.loads((newest / "trainer_state.json").read_text())
    assert 5 <= state["step"] < first + 5 and state["data"]["index"] != 0  # mid-epoch
    again = run_cli("train", str(config), cwd=work)
    assert again.returncode == 2 and "add --resume" in again.stderr
    changed = run_cli("train", str(config), "adapter.r=4", "train.batch_size=2", "--resume", cwd=work)
    assert changed.returncode == 2
    assert "adapter, train.batch_size (1 → 2) changed" in changed.stderr and "--force" in changed.stderr

    process = start_training(work, config, "--resume", stall=f"step-{stalled}")
    wait_until((work / "stalled").is_file, process, f"the checkpoint of step {stalled} half-written")
    kill(process)
    assert f"resuming from {newest}" in " ".join((work / "killed.out").read_text().split())
    (partial,) = (run_dir / "checkpoints").glob(f".step-{stalled}.tmp-*")
    assert sorted(p.name for p in partial.iterdir()) == ["trainable.safetensors"]  # weights only: mid-write
    assert not (run_dir / "checkpoints" / f"step-{stalled}").exists()

    process = start_training(work, config, "--resume")
    wait_until(lambda: logged_step(run_dir) >= third, process, f"step {third}")
    kill(process)
    assert f"resuming from {run_dir / 'checkpoints' / f'step-{stalled - 5}'}" in " ".join(
        (work / "killed.out").read_text().split()
    )

    resumed = run_cli("train", str(config), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert status(run_dir)["status"] == "finished" and "error" not in status(run_dir)
    difference = assert_same_run(run_dir, reference)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("step-")]  # cleaned up
    with capsys.disabled():
        print(
            f"\n  killed at step {first}, mid-checkpoint {stalled}, step {third}: weights differ by {difference:.3g}"
        )

    finished = run_cli("train", str(config), "--resume", cwd=work)
    assert finished.returncode == 2 and "finished run" in finished.stderr and "nothing to resume" in finished.stderr


def stop_then_resume(work: Path, model_dir: Path, reference: Path, stop: signal.Signals, exit_status: int) -> None:
    """Send `stop` after the checkpoint of step 5: it saves a checkpoint, says how to resume, and resuming ends
    where the uninterrupted run did."""
    name = f"stopped-{stop.name.lower()}"
    config = config_for(work, model_dir, name)
    run_dir = work / name
    process = launch(config, work)
    wait_for_checkpoint(run_dir, 5, process)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    text = " ".join(stderr.split())
    assert process.returncode == exit_status, stderr
    assert "Traceback" not in stderr
    step = int(text.split("interrupted after step ")[1].split(";")[0])
    assert 5 <= step < RUN["max_steps"]
    assert (stop == signal.SIGTERM) == (f"SIGTERM: interrupted after step {step}" in text)
    assert f"checkpoint saved to {run_dir / 'checkpoints' / f'step-{step}'}" in text
    assert f"continue with: tuneforge train {config} --resume" in text
    assert (run_dir / "checkpoints" / f"step-{step}" / "trainer_state.json").is_file()
    assert read_metrics(run_dir)[-1]["step"] == step  # nothing trained after the saved step
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"  # the curve up to the stop, drawn on the way out
    record = status(run_dir)
    assert record["status"] == "interrupted" and record["error"] == f"interrupted by {stop.name} after step {step}"

    resumed = run_cli("train", str(config), "--resume", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    record = status(run_dir)
    assert record["status"] == "finished" and record["resumed_from_step"] == step
    assert "error" not in record  # the interruption is history once the run finished
    assert_same_run(run_dir, reference)


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(work, tiny_llama_dir, reference):
    stop_then_resume(work, tiny_llama_dir, reference, signal.SIGINT, 130)


@pytest.mark.scenario("sigterm_training")
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(work, tiny_llama_dir, reference):
    stop_then_resume(work, tiny_llama_dir, reference, signal.SIGTERM, 143)


@pytest.mark.scenario("determinism")
def test_the_same_config_twice_gives_bit_identical_losses_and_weights(work, tiny_llama_dir, reference):
    """train.deterministic: a second run of the reference config (into another directory) is bit-identical."""
    result = run_cli("train", str(config_for(work, tiny_llama_dir, "again")), cwd=work)
    assert result.returncode == 0, result.stderr
    got, want = read_metrics(work / "again"), read_metrics(reference)
    assert len(got) == RUN["max_steps"]
    for a, b in zip(got, want, strict=True):
        assert (a["loss"], a["grad_norm"], a.get("val_loss")) == (b["loss"], b["grad_norm"], b.get("val_loss"))
    weights, expected = adapter_weights(work / "again"), adapter_weights(reference)
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)
    environment = json.loads((work / "again" / "environment.json").read_text())
    assert environment == json.loads((reference / "environment.json").read_text())
    assert environment["deterministic"] is True and environment["seed"] == 42
    assert environment["numerics"]["deterministic_algorithms"] is True
    assert environment["numerics"]["deterministic_warn_only"] is False
    assert environment["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert environment["env"]["TOKENIZERS_PARALLELISM"] == "false"


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
