"""Checkpoints: atomic writes, pruning, RNG round trips, where a run starts, the config guard, and an exact
in-process resume; early stopping restores the best weights."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from tuneforge.atomic import temp_dir_beside
from tuneforge.config.load import config_from_dict
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.models.adapters.lora import LoraParams
from tuneforge.train import checkpoint as ckpt
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.checkpoint import (
    CheckpointStore,
    capture_rng,
    list_checkpoints,
    load_trainable,
    load_training_state,
    prune_checkpoints,
    read_trainer_state,
    restore_rng,
    resume_point,
    save_checkpoint,
)
from tuneforge.train.loop import LoopContext, train_loop
from tuneforge.train.manifest import file_digest
from tuneforge.train.settings import LoopSettings, check_compatible, resume_guard, run_fingerprints


def small_module() -> nn.Module:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    module[0].requires_grad_(False)
    return module


def save(root, step: int, module: nn.Module | None = None, **state) -> None:
    save_checkpoint(root, step, module or small_module(), {"rng": capture_rng()}, {"step": step, **state})


# ---------------------------------------------------------------------------------------------------- files


def test_round_trip_holds_only_trainable_weights(tmp_path):
    module = small_module()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad])
    module(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, 3, module, {"optimizer": optimizer.state_dict(), "rng": capture_rng()}, {"a": 1})
    assert path == tmp_path / "step-3" and read_trainer_state(path) == {"a": 1, "format": 2}
    manifest = json.loads((path / "manifest.json").read_text())["files"]
    assert sorted(manifest) == ["trainable.safetensors", "trainer_state.json", "training_state.pt"]
    for name, entry in manifest.items():
        assert entry == {"size": (path / name).stat().st_size, "sha256": file_digest(path / name)}, name
    from safetensors.torch import load_file

    assert set(load_file(str(path / "trainable.safetensors"))) == {"1.weight", "1.bias", "2.weight", "2.bias"}
    other = small_module()
    with torch.no_grad():
        for param in other.parameters():
            param.add_(1.0)
    load_trainable(other, path)
    assert torch.equal(other[2].weight, module[2].weight) and not torch.equal(other[0].weight, module[0].weight)
    state = load_training_state(path)  # weights_only: nothing executable in the file
    assert state["optimizer"]["state"][0]["step"] == 1


def test_missing_trainable_weights_are_a_user_error(tmp_path):
    save(tmp_path, 1)
    bigger = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2), nn.Linear(2, 2))
    bigger[0].requires_grad_(False)
    with pytest.raises(UserError, match="holds no weights for 2 trainable parameters"):
        load_trainable(bigger, tmp_path / "step-1")


def test_half_written_checkpoints_are_ignored_and_cleaned(tmp_path, monkeypatch):
    save(tmp_path, 2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)  # dies after the weights, before the state
    with pytest.raises(OSError):
        save(tmp_path, 4)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2"]  # a failed write removes its temporary folder
    # a process killed mid-write leaves its temporary folder behind; it is named so that it never looks complete
    killed = temp_dir_beside(tmp_path / "step-4")
    shutil.copy(tmp_path / "step-2" / "trainable.safetensors", killed)
    (tmp_path / "step-6").mkdir()  # a step folder without trainer_state.json is not complete either
    assert killed.name.startswith(".step-4.tmp-") and len(killed.name) > len(".step-4.tmp-") + 6
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2"]
    save(tmp_path, 8)
    prune_checkpoints(tmp_path, keep=None, best_step=None)
    assert not killed.exists() and not list(tmp_path.glob(".*"))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2", "step-8"]


def test_saving_a_step_again_replaces_it(tmp_path):
    save(tmp_path, 5, marker="old")
    save(tmp_path, 5, marker="new")
    assert read_trainer_state(tmp_path / "step-5")["marker"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-5"]


@pytest.mark.parametrize(
    ("keep", "best", "left"),
    [(2, 2, [2, 5, 6]), (2, 6, [5, 6]), (1, None, [6]), (1, 1, [1, 6]), (None, None, [1, 2, 3, 4, 5, 6])],
)
def test_prune_keeps_the_newest_and_the_best(tmp_path, keep, best, left):
    for step in range(1, 7):
        save(tmp_path, step)
    prune_checkpoints(tmp_path, keep, best)
    assert [ckpt.step_of(p) for p in list_checkpoints(tmp_path)] == left


def test_store_schedule_and_discard(tmp_path):
    assert CheckpointStore(tmp_path).due(3, evaluated=True) and not CheckpointStore(tmp_path).due(3, False)
    assert CheckpointStore(tmp_path, every=3).due(6, False) and not CheckpointStore(tmp_path, every=3).due(7, True)
    assert not CheckpointStore(tmp_path, every=0).due(6, True)
    store = CheckpointStore(tmp_path, keep=None)
    for step in (2, 4, 6):
        save(tmp_path, step)
    store.discard_after(3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2"] and store.path(4) is None


def test_rng_states_round_trip():
    states = capture_rng()
    drawn = (random.random(), float(torch.rand(1)), float(np.random.rand()))
    restore_rng(states)
    assert (random.random(), float(torch.rand(1)), float(np.random.rand())) == drawn


def test_metrics_log_replace_rewrites_the_file(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write(step=step, loss=1.0)
    log.replace([{"step": 1, "loss": 1.0}])
    log.write(step=2, loss=0.5)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and log.records == lines


# ---------------------------------------------------------------------------------------------------- where to start


def config(run_dir, **train):
    return config_from_dict({"output": {"dir": str(run_dir)}, "train": train})


def start_of(config) -> Path | None:
    """resume_point for a config, as tuneforge train asks it."""
    return resume_point(Path(config.output.dir), config.train.resume, config.output.overwrite)


def write_status(run_dir, **status):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(status))


def test_fresh_directory_starts_afresh(tmp_path):
    assert start_of(config(tmp_path / "new")) is None
    assert start_of(config(tmp_path / "new", resume="auto")) is None


def test_checkpoints_without_resume_are_refused_unless_overwrite(tmp_path):
    run = tmp_path / "run"
    write_status(run, status="failed")
    save(run / "checkpoints", 4)
    with pytest.raises(UserError, match=r"add --resume .* or set output.overwrite=true"):
        start_of(config(run))
    overwrite = config_from_dict({"output": {"dir": str(run), "overwrite": True}})
    assert start_of(overwrite) is None and not (run / "checkpoints").exists()


def test_resume_picks_the_newest_complete_or_the_given_checkpoint(tmp_path):
    run = tmp_path / "run"
    write_status(run, status="interrupted")
    for step in (3, 6):
        save(run / "checkpoints", step)
    (run / "checkpoints" / ".tmp-step-9-x").mkdir()
    assert start_of(config(run, resume="auto")) == run / "checkpoints" / "step-6"
    assert start_of(config(run, resume=True)) == run / "checkpoints" / "step-6"
    assert start_of(config(run, resume=str(run / "checkpoints" / "step-3"))) == run / "checkpoints" / "step-3"
    assert start_of(config(tmp_path / "other", resume=str(run))) == run / "checkpoints" / "step-6"
    with pytest.raises(UserError, match="train.resume: .* is not a complete checkpoint"):
        start_of(config(run, resume=str(tmp_path / "nowhere")))


def test_resuming_a_finished_run_says_so(tmp_path):
    run = tmp_path / "run"
    write_status(run, status="finished", steps=40)
    save(run / "checkpoints", 30)
    with pytest.raises(UserError, match=r"already holds a finished run \(40 steps\): there is nothing to resume"):
        start_of(config(run, resume="auto"))


# ---------------------------------------------------------------------------------------------------- config guard


def samples(*texts: str) -> list[RenderedSample]:
    return [RenderedSample([ord(c) for c in t], [IGNORE_INDEX] + [ord(c) for c in t[1:]]) for t in texts]


def fingerprints(data=("ab", "cd"), **sections):
    raw = {"model": {"name_or_path": "m"}, **sections}
    return run_fingerprints(resume_guard(config_from_dict(raw)), samples(*data), samples("ef"))


def test_changed_guarded_keys_are_named(tmp_path):
    saved = fingerprints()
    assert check_compatible(saved, fingerprints(), tmp_path, force=False) == []
    assert check_compatible(saved, fingerprints(train={"eval_steps": 3, "logging_steps": 5}), tmp_path, False) == []
    cases = {
        "adapter": fingerprints(adapter={"name": "lora", "r": 4}),
        'model.name_or_path ("m" → "other")': fingerprints(model={"name_or_path": "other"}),
        "data (the prepared samples differ)": fingerprints(data=("ab", "cx")),
        "train.batch_size (4 → 8)": fingerprints(train={"batch_size": 8}),
    }
    for key, current in cases.items():
        with pytest.raises(UserError, match=r"cannot resume from .*: " + re.escape(key) + " changed.*--force"):
            check_compatible(saved, current, tmp_path, force=False)
    assert check_compatible(saved, cases["adapter"], tmp_path, force=True) == ["adapter"]


@pytest.mark.parametrize(
    ("train", "change"),
    [
        ({"max_steps": 28}, "train.max_steps (28 → 40), restore with train.max_steps=28"),
        ({"max_steps": -1, "epochs": 3.0}, "train.epochs (3.0 → 2.0), restore with train.epochs=3.0"),
        ({"scheduler": "cosine"}, 'train.scheduler ("cosine" → "linear"), restore with train.scheduler="cosine"'),
        ({"warmup_ratio": 0.1}, "train.warmup_ratio (0.1 → 0.2), restore with train.warmup_ratio=0.1"),
        ({"warmup_steps": 3}, "train.warmup_steps (3 → null), restore with train.warmup_steps=3"),
    ],
)
def test_a_changed_schedule_is_refused_naming_old_and_new(tmp_path, train, change):
    changed = {"max_steps": 40, "epochs": 2.0, "scheduler": "linear", "warmup_ratio": 0.2, "warmup_steps": None}
    key = next(iter(train)) if len(train) == 1 else "epochs"
    saved = fingerprints(train=train)
    current = fingerprints(train={**train, key: changed[key]})
    what, restore = change.split(", restore with ")
    with pytest.raises(UserError) as err:
        check_compatible(saved, current, tmp_path, force=False)
    message = str(err.value)
    assert f"{what} changed since it was written" in message
    assert "another learning-rate schedule" in message and f"Put the old value back ({restore})" in message
    assert "--force" in message and "output.overwrite=true" in message
    assert check_compatible(saved, current, tmp_path, force=True) == [f"train.{key}"]


def test_keys_without_effect_do_not_refuse_a_resume(tmp_path):
    # epochs count only without max_steps, warmup_ratio only without warmup_steps
    saved = fingerprints(train={"max_steps": 20, "epochs": 3.0, "warmup_steps": 2, "warmup_ratio": 0.1})
    current = fingerprints(train={"max_steps": 20, "epochs": 1.0, "warmup_steps": 2, "warmup_ratio": 0.5})
    assert check_compatible(saved, current, tmp_path, force=False) == []
    # a constant rate without warm-up does not depend on the run's length: a run may be extended
    constant = {"scheduler": "constant", "warmup_ratio": 0.0}
    saved = fingerprints(train={"max_steps": 20, **constant})
    assert check_compatible(saved, fingerprints(train={"max_steps": 30, **constant}), tmp_path, False) == []
    with pytest.raises(UserError, match=r"train.max_steps \(20 → 30\) changed"):  # warm-up of 10% of the run
        check_compatible(
            fingerprints(train={"max_steps": 20, "scheduler": "constant"}),
            fingerprints(train={"max_steps": 30, "scheduler": "constant"}),
            tmp_path,
            False,
        )


def test_checkpoints_of_hashed_fingerprints_still_resume(tmp_path):
    import hashlib

    current = fingerprints(train={"max_steps": 20})
    digest = lambda v: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]  # noqa: E731
    old = {
        key: value if key == "data" or key in ("method", "adapter") else digest(value)
        for key, value in current.items()
    }
    assert check_compatible(old, current, tmp_path, force=False, hashed=True) == []
    with pytest.raises(UserError, match=r": train.max_steps changed since"):
        check_compatible(old, fingerprints(train={"max_steps": 30}), tmp_path, force=False, hashed=True)


# ---------------------------------------------------------------------------------------------------- the loop


def settings(**changes) -> LoopSettings:
    values = dict(
        learning_rate=5e-3,
        epochs=1,
        max_steps=8,
        batch_size=2,
        grad_accum=1,
        max_grad_norm=1.0,
        scheduler="cosine",
        warmup_ratio=0.0,
        warmup_steps=2,
        weight_decay=0.01,
        seed=0,
        eval_steps=2,
        logging_steps=1,
        packing=False,
        pad_id=0,
        layer_lr_decay=0.9,
    )
    return LoopSettings(**{**values, **changes})


def token_samples(count: int, seed: int) -> list[RenderedSample]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ids = [rng.randrange(4, 700) for _ in range(rng.randrange(8, 20))]
        out.append(RenderedSample(ids, [IGNORE_INDEX] * 3 + ids[3:]))
    return out


def lora_model(model_dir):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return ADAPTERS.get("lora").apply(base, LoraParams(r=4, dropout=0.2))  # dropout draws from the torch RNG


def trained(model_dir, tmp_path, name: str, resume=None, **changes):
    model = lora_model(model_dir)
    log = MetricsLog(tmp_path / f"{name}.jsonl")
    store = CheckpointStore(tmp_path / name, every=3)
    context = LoopContext(checkpoints=store, resume=resume)
    result = train_loop(
        model, METHODS.get("sft").bind(), token_samples(10, 1), token_samples(3, 2), settings(**changes), log, context
    )
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return result, log.records, weights


def test_resumed_run_equals_the_uninterrupted_one(tiny_llama_dir, tmp_path):
    _, full_records, full_weights = trained(tiny_llama_dir, tmp_path, "full")
    assert [ckpt.step_of(p) for p in list_checkpoints(tmp_path / "full")] == [3, 6]
    state = read_trainer_state(tmp_path / "full" / "step-3")
    assert state["data"] == {"epoch": 0, "index": 3, "shuffle_seed": 0}  # 5 steps per epoch: mid-epoch
    shutil.copytree(tmp_path / "full" / "step-3", tmp_path / "copy" / "step-3")
    result, records, weights = trained(tiny_llama_dir, tmp_path, "resumed", resume=tmp_path / "copy" / "step-3")
    assert result.resumed_from == 3
    assert [r["step"] for r in records] == list(range(1, 9))
    for a, b in zip(full_records, records, strict=True):
        assert a["loss"] == b["loss"] and a.get("val_loss") == b.get("val_loss") and a["lr"] == b["lr"]
    assert max(float((full_weights[k] - weights[k]).abs().max()) for k in weights) == 0.0


def test_early_stopping_keeps_the_best_weights_in_memory_without_a_store(tiny_llama_dir, tmp_path):
    def run(**changes):
        model = lora_model(tiny_llama_dir)
        log = MetricsLog(tmp_path / "es.jsonl")
        config = settings(learning_rate=0.3, scheduler="constant", warmup_steps=0, eval_steps=1, **changes)
        result = train_loop(model, METHODS.get("sft").bind(), token_samples(10, 1), token_samples(3, 2), config, log)
        return result, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    stopped, weights = run(early_stopping_patience=1, max_steps=30)
    assert stopped.stopped_early and stopped.restored_best and stopped.best_step < stopped.steps
    _, reference = run(max_steps=stopped.best_step)  # the same run, simply ended at the best step
    assert all(torch.equal(weights[k], reference[k]) for k in weights)


def test_early_stopping_needs_validation_data(tiny_llama_dir, tmp_path):
    with pytest.raises(UserError, match="early_stopping_patience needs validation data"):
        train_loop(
            lora_model(tiny_llama_dir),
            METHODS.get("sft").bind(),
            token_samples(4, 1),
            [],
            settings(early_stopping_patience=2),
            MetricsLog(tmp_path / "m.jsonl"),
        )
