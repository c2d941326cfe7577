"""Checkpoints that survive the disk: durable writes, manifests, a damaged newest checkpoint, a full disk, and
save_total_limit keeping the best checkpoint across resumes."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from fixtures.loop_runs import Trained, assert_same_training, train_run
from tuneforge.errors import UserError
from tuneforge.train import checkpoint as ckpt
from tuneforge.train.checkpoint import (
    CheckpointStore,
    capture_rng,
    checkpoint_problems,
    list_checkpoints,
    read_trainer_state,
    resume_point,
    save_checkpoint,
    step_of,
)
from tuneforge.train.lifecycle import start_point
from tuneforge.train.manifest import file_digest


def small_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def save(root: Path, step: int, **state) -> Path:
    return save_checkpoint(root, step, small_module(), {"rng": capture_rng()}, {"step": step, **state})


def interrupted_run(root: Path) -> Path:
    """A run directory whose run.json says it was interrupted (so a resume is allowed)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_text(json.dumps({"status": "interrupted"}))
    return root


def digests(folder: Path) -> dict[str, str]:
    return {path.name: file_digest(path) for path in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------------------------------- durability


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fsynced files")
def test_files_and_folders_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    final = save(tmp_path, 3)
    renames = [i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith(f"-> {final}")]
    assert len(renames) == 1
    temporary = events[renames[0]][1].split(" -> ")[0]
    before = {what for kind, what in events[: renames[0]] if kind == "fsync"}
    written = ["trainable.safetensors", "training_state.pt", "trainer_state.json", "manifest.json"]
    assert {f"{temporary}/{name}" for name in written} | {temporary} <= before
    assert ("fsync", str(tmp_path)) in events[renames[0] + 1 :]  # the new name itself reaches the disk


def test_an_intact_checkpoint_has_no_problems_and_damage_is_named(tmp_path):
    path = save(tmp_path, 3)
    assert checkpoint_problems(path) == []
    weights = path / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    assert checkpoint_problems(path) == ["trainable.safetensors does not match its sha256"]
    weights.write_bytes(bytes(data[:100]))
    assert checkpoint_problems(path) == [f"trainable.safetensors has 100 bytes, {len(data)} were written"]
    (path / "training_state.pt").unlink()
    assert "training_state.pt is missing" in checkpoint_problems(path)
    (path / "manifest.json").write_text("{trunc")
    assert checkpoint_problems(path)[0].startswith("manifest.json is unreadable")
    (path / "manifest.json").unlink()
    assert checkpoint_problems(path) == ["manifest.json is missing"]  # this format promises one


def test_a_checkpoint_from_before_manifests_is_accepted_unchecked(tmp_path):
    path = save(tmp_path, 3)
    (path / "manifest.json").unlink()
    state = read_trainer_state(path)
    del state["format"]
    (path / "trainer_state.json").write_text(json.dumps(state))
    assert checkpoint_problems(path) == []


# ---------------------------------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def uninterrupted(tiny_llama_dir, tmp_path_factory) -> tuple[Trained, Path]:
    """8 steps, checkpoints at steps 3 and 6."""
    work = tmp_path_factory.mktemp("uninterrupted")
    trained = train_run(tiny_llama_dir, work / "checkpoints", work / "metrics.jsonl")
    assert [step_of(p) for p in list_checkpoints(work / "checkpoints")] == [3, 6]
    return trained, work / "checkpoints"


@pytest.mark.scenario("corrupt_checkpoint")
def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tiny_llama_dir, tmp_path, uninterrupted, caplog):
    reference, checkpoints = uninterrupted
    run = interrupted_run(tmp_path / "run")
    shutil.copytree(checkpoints, run / "checkpoints")
    weights = run / "checkpoints" / "step-6" / "trainable.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(size // 2)  # what a power cut before the data reached the disk leaves

    with caplog.at_level(logging.WARNING, logger="tuneforge.train.checkpoint"):
        start = start_point(run, "auto", False, None)
    assert start == run / "checkpoints" / "step-3"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"checkpoint {run / 'checkpoints' / 'step-6'} is damaged" in warning
    assert f"trainable.safetensors has {size // 2} bytes, {size} were written" in warning
    assert "falling back to step-3" in warning

    resumed = train_run(tiny_llama_dir, run / "checkpoints", tmp_path / "metrics.jsonl", resume=start)
    assert resumed.result.resumed_from == 3
    assert_same_training(resumed, reference)
    assert checkpoint_problems(run / "checkpoints" / "step-6") == []  # rewritten by the resumed run


def test_every_checkpoint_damaged_or_a_damaged_explicit_one_is_an_error(tmp_path):
    run = interrupted_run(tmp_path / "run")
    for step in (2, 4):
        save(run / "checkpoints", step)
    (run / "checkpoints" / "step-4" / "training_state.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"train.resume: .*step-4 is damaged \(training_state.pt has 0 bytes.*"
                       r"resume from an earlier one \(step-2\)"):  # fmt: skip
        resume_point(run, str(run / "checkpoints" / "step-4"), False)
    assert resume_point(run, str(run), False) == run / "checkpoints" / "step-2"  # a run directory: falls back
    (run / "checkpoints" / "step-2" / "trainer_state.json").write_text("{")
    with pytest.raises(UserError, match=r"every checkpoint under .* is damaged.*output.overwrite=true"):
        resume_point(run, "auto", False)


# ---------------------------------------------------------------------------------------------------- full disk


@pytest.mark.scenario("full_disk")
def test_a_full_disk_keeps_the_previous_checkpoint_and_resume_works(
    tiny_llama_dir, tmp_path, monkeypatch, uninterrupted
):
    reference, _ = uninterrupted
    run = interrupted_run(tmp_path / "run")
    checkpoints = run / "checkpoints"
    real_save = torch.save
    kept: dict[str, str] = {}

    def save_until_the_disk_fills(obj, target, *args, **kwargs):
        if "step-6" not in str(target):
            return real_save(obj, target, *args, **kwargs)
        kept.update(digests(checkpoints / "step-3"))
        with open(target, "wb") as handle:
            handle.write(b"\0" * 512)  # part of the file reached the disk before it filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(ckpt.torch, "save", save_until_the_disk_fills)
    with pytest.raises(UserError) as err:
        train_run(tiny_llama_dir, checkpoints, tmp_path / "metrics.jsonl")
    message = str(err.value)
    assert f"could not write the checkpoint of step 6 under {checkpoints}: the disk is full" in message
    assert f"the newest complete checkpoint is {checkpoints / 'step-3'}" in message and "--resume" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3"]  # nothing half-written left behind
    assert digests(checkpoints / "step-3") == kept and checkpoint_problems(checkpoints / "step-3") == []

    monkeypatch.undo()
    start = resume_point(run, "auto", False)
    assert start == checkpoints / "step-3"
    resumed = train_run(tiny_llama_dir, checkpoints, tmp_path / "metrics.jsonl", resume=start)
    assert_same_training(resumed, reference)


# ---------------------------------------------------------------------------------------------------- the best one


class Killed(Exception):
    """Stands for the process dying right after a checkpoint."""


@pytest.mark.scenario("checkpoint_limit")
def test_save_total_limit_keeps_the_best_checkpoint_across_resumes(tiny_llama_dir, tmp_path):
    # a high constant rate: validation loss falls for a few steps, then rises; checkpoint at every evaluation
    common = dict(every=None, keep=1, learning_rate=0.3, scheduler="constant", warmup_steps=0, eval_steps=1)
    full = train_run(tiny_llama_dir, tmp_path / "full", tmp_path / "full.jsonl", max_steps=10, **common)
    val = {r["step"]: r["val_loss"] for r in full.records}
    best = min(val, key=val.get)
    assert 1 < best < 7 and val[10] > val[best]  # the run really turns
    assert [step_of(p) for p in list_checkpoints(tmp_path / "full")] == [best, 9]

    checkpoints = tmp_path / "run"
    kill_at = best + 2

    def die_after_checkpoint() -> None:
        if (checkpoints / f"step-{kill_at}").is_dir():
            raise Killed

    with pytest.raises(Killed):
        train_run(
            tiny_llama_dir, checkpoints, tmp_path / "a.jsonl", max_steps=10, on_eval=die_after_checkpoint, **common
        )
    assert [step_of(p) for p in list_checkpoints(checkpoints)] == [best, kill_at]
    resumed = train_run(
        tiny_llama_dir,
        checkpoints,
        tmp_path / "b.jsonl",
        resume=checkpoints / f"step-{kill_at}",
        max_steps=10,
        **common,
    )
    assert_same_training(resumed, full)
    assert [step_of(p) for p in list_checkpoints(checkpoints)] == [best, 9]  # pruned to 1 plus the best
    assert read_trainer_state(checkpoints / f"step-{best}")["loop"]["best_val_loss"] == val[best]


def test_the_best_checkpoint_is_the_best_evaluated_one_when_the_best_step_has_none(tmp_path):
    store = CheckpointStore(tmp_path, every=2, keep=1)
    records = [{"step": 2, "val_loss": 1.0}, {"step": 3, "val_loss": 0.5}, {"step": 4, "val_loss": 0.8}]
    for step in (2, 4):
        store.save(step, small_module(), {"rng": capture_rng()}, {"step": step, "metrics": records}, best_step=3)
    assert [step_of(p) for p in list_checkpoints(tmp_path)] == [4]  # newest is also the best checkpoint
    records += [{"step": 5, "val_loss": 0.9}, {"step": 6, "val_loss": 0.95}]
    store.save(6, small_module(), {"rng": capture_rng()}, {"step": 6, "metrics": records}, best_step=3)
    assert [step_of(p) for p in list_checkpoints(tmp_path)] == [4, 6]  # step 3 has no checkpoint: step 4 is kept
