"""Checkpoints that let a run survive: `RUN_DIR/checkpoints/step-N/`, written atomically, resumed exactly.

A checkpoint folder holds
  trainable.safetensors   the trainable parameters (adapter, or the trained part of the model), by name
  training_state.pt       optimizer, scheduler and loss-scaler state, and the RNG states (python, numpy, torch, CUDA)
  trainer_state.json      step, data position (epoch, steps done in it, shuffle seed), counters, metrics so far,
                          and fingerprints of the config parts a resumed run must share
  manifest.json           size and sha256 of each of those files (see tuneforge.train.manifest)

It is written into a temporary folder beside it, flushed to disk (files and folder entries) and renamed into
place, so `step-N` either is complete or does not exist; a leftover `.step-N.tmp-*` folder (a run killed
mid-save) is ignored and cleaned up by the next save. A write that fails (a full disk) removes its temporary
folder and stops the run with an error naming the newest complete checkpoint. A resume checks the newest
checkpoint against its manifest and falls back to the one before, with a warning, when it is damaged.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tuneforge.atomic import TEMP_MARK, fsync_dir, fsync_tree, temp_dir_beside, temp_path_beside
from tuneforge.errors import UserError
from tuneforge.models.rundir import RunLayout, read_status
from tuneforge.train.distributed import assign_whole
from tuneforge.train.manifest import MANIFEST_FILE, verify_checkpoint, write_manifest

__all__ = [
    "CheckpointStore",
    "capture_rng",
    "checkpoint_problems",
    "list_checkpoints",
    "load_trainable",
    "load_training_state",
    "newest_intact",
    "prune_checkpoints",
    "read_trainer_state",
    "restore_rng",
    "save_checkpoint",
    "step_of",
    "trainable_state",
]

STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "trainable.safetensors"
TENSORS_FILE = "training_state.pt"
FORMAT = 2  # trainer_state.json "format": 2 and later promise a manifest.json
_STEP_DIR = re.compile(r"^step-(\d+)$")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- layout


def step_of(path: Path) -> int:
    """The step number of a `step-N` folder."""
    match = _STEP_DIR.match(path.name)
    if not match:
        raise ValueError(f"{path} is not a step-N checkpoint folder")
    return int(match.group(1))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root` (step-N folders holding trainer_state.json), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=step_of)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """trainer_state.json of the checkpoint at `path`."""
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training step can draw from, in a form torch.load(weights_only=True) reads back."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        states["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
    except ImportError:
        pass
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put back the RNG states of `capture_rng`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------------- save / load


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The requires_grad parameters by name, as contiguous CPU tensors."""
    return {
        name: param.detach().to("cpu", copy=True).contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def _remove(path: Path) -> None:
    """Delete a folder by first renaming it to a temporary name, so it never looks complete half-deleted."""
    doomed = temp_path_beside(path)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    tensors: dict[str, Any],
    state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `root/step-<step>` atomically and durably (replacing an older one of that step).

    The weights are `model`'s trainable parameters, or `weights` when given (a sharded run's, gathered whole).

    The files and their manifest go to a temporary folder, are fsynced, and the folder is renamed into place;
    on any error the temporary folder is removed and the error raised.
    """
    final = root / f"step-{step}"
    tmp = temp_dir_beside(final)
    try:
        save_file(weights if weights is not None else trainable_state(model), str(tmp / WEIGHTS_FILE))
        torch.save(tensors, tmp / TENSORS_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({**state, "format": FORMAT}), encoding="utf-8")
        write_manifest(tmp)
        fsync_tree(tmp)
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    return final


def checkpoint_problems(path: Path) -> list[str]:
    """What is damaged in the checkpoint at `path` ([] when it is intact; see tuneforge.train.manifest)."""
    try:
        written = read_trainer_state(path).get("format", 1)
    except (OSError, ValueError) as err:
        written = FORMAT  # unreadable: its manifest (if any) says more
        if not (path / MANIFEST_FILE).is_file():
            return [f"{STATE_FILE} is unreadable ({err})"]
    return verify_checkpoint(path, required=written >= FORMAT)


def newest_intact(checkpoints: list[Path]) -> Path | None:
    """The newest of `checkpoints` (oldest first) that is intact; each damaged newer one is skipped with a warning.

    Raises a UserError when there are checkpoints but every one is damaged.
    """
    for position in range(len(checkpoints) - 1, -1, -1):
        path = checkpoints[position]
        problems = checkpoint_problems(path)
        if not problems:
            return path
        earlier = f"falling back to {checkpoints[position - 1].name}" if position else "no earlier checkpoint"
        log.warning("checkpoint %s is damaged (%s): %s", path, "; ".join(problems), earlier)
    if checkpoints:
        raise UserError(
            f"every checkpoint under {checkpoints[0].parent} is damaged (see the warnings above): nothing to resume "
            "from. Restore them from a backup, or start afresh with output.overwrite=true"
        )
    return None


def load_trainable(model: Any, path: Path) -> None:
    """Copy the checkpoint's trainable weights into `model`; every trainable parameter must be there."""
    saved = load_file(str(path / WEIGHTS_FILE))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = [name for name in params if name not in saved]
    if missing:
        raise UserError(
            f"{path} holds no weights for {len(missing)} trainable parameters (e.g. {missing[0]}): it was made "
            "with another model or adapter; resume from a matching checkpoint or start afresh"
        )
    for name, param in params.items():
        assign_whole(param, saved[name])  # into this process's shard in a sharded run


def load_training_state(path: Path) -> dict[str, Any]:
    """Optimizer, scheduler, scaler and RNG states of a checkpoint (tensors only: nothing executable)."""
    import pickle

    try:
        return torch.load(path / TENSORS_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UserError(
            f"{path / TENSORS_FILE}: not a training state tuneforge wrote ({str(err).splitlines()[0]}); it was not "
            "loaded (only tensors are read, never code). Resume from another checkpoint or start afresh."
        ) from None


def prune_checkpoints(root: Path, keep: int | None, best_step: int | None) -> list[Path]:
    """Delete checkpoints beyond the newest `keep`, never the best one or the newest; clear stale temporaries."""
    for leftover in root.glob(f".*{TEMP_MARK}*") if root.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    complete = list_checkpoints(root)
    if keep is None:
        return []
    protected = set(complete[-max(keep, 1) :])
    removed = [p for p in complete if p not in protected and step_of(p) != best_step]
    for path in removed:
        _remove(path)
    return removed


@dataclass
class CheckpointStore:
    """Where and when the loop checkpoints: every `every` steps (None: at each evaluation; 0: never)."""

    root: Path
    every: int | None = None
    keep: int | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)

    def due(self, step: int, evaluated: bool) -> bool:
        """Whether step `step` ends with a periodic checkpoint."""
        if self.every is None:
            return evaluated
        return self.every > 0 and step % self.every == 0

    def save(
        self,
        step: int,
        model: Any,
        tensors: dict[str, Any],
        state: dict[str, Any],
        best_step: int | None,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Save step `step`, then prune to the newest `keep` plus the best (see `best_checkpoint`); `weights` as in
        `save_checkpoint`.

        A write that fails (e.g. a full disk) leaves the earlier checkpoints as they were and is a UserError.
        """
        try:
            state = {**state, "fingerprints": self.fingerprints}
            path = save_checkpoint(self.root, step, model, tensors, state, weights)
        except OSError as err:
            raise self._write_error(step, err) from err
        prune_checkpoints(self.root, self.keep, self.best_checkpoint(best_step, state.get("metrics", [])))
        return path

    def best_checkpoint(self, best_step: int | None, records: list[dict[str, Any]]) -> int | None:
        """The step of the checkpoint to keep as the best: `best_step` when it has one, else the checkpoint whose
        step has the lowest validation loss in `records` (None when no checkpoint step was evaluated)."""
        saved = {step_of(path) for path in list_checkpoints(self.root)}
        if best_step in saved:
            return best_step
        losses = {r["step"]: r["val_loss"] for r in records if r.get("val_loss") is not None and r["step"] in saved}
        return min(losses, key=losses.__getitem__) if losses else None

    def _write_error(self, step: int, err: OSError) -> UserError:
        reason = "the disk is full" if err.errno == errno.ENOSPC else "the write failed"
        previous = list_checkpoints(self.root)
        kept = f"the newest complete checkpoint is {previous[-1]}" if previous else "there is no earlier checkpoint"
        return UserError(
            f"could not write the checkpoint of step {step} under {self.root}: {reason} ({err.strerror or err}). "
            f"Nothing half-written was kept; {kept}. Free some space (or lower train.save_total_limit), then "
            "continue with --resume"
        )

    def discard_after(self, step: int) -> None:
        """Delete checkpoints newer than `step` (a run resumed from an older checkpoint rewrites them)."""
        for path in list_checkpoints(self.root):
            if step_of(path) > step:
                _remove(path)

    def path(self, step: int) -> Path | None:
        """The complete checkpoint of `step`, if there is one."""
        folder = self.root / f"step-{step}"
        return folder if (folder / STATE_FILE).is_file() else None


# ---------------------------------------------------------------------------------------------------- where to start


def _finished_error(run_dir: Path, status: dict[str, Any]) -> UserError:
    steps = f" ({status['steps']} steps)" if "steps" in status else ""
    return UserError(
        f"{run_dir} already holds a finished run{steps}: there is nothing to resume. Drop --resume / train.resume, "
        "choose another output.dir, or set output.overwrite=true to train again"
    )


def _explicit_checkpoint(value: str, base_dir: Path | None) -> Path:
    """train.resume=<path>: a step-N folder, or a run directory (its newest checkpoint)."""
    candidates = [Path(value)] + ([base_dir / value] if base_dir is not None else [])
    for path in candidates:
        if (path / STATE_FILE).is_file():
            problems = checkpoint_problems(path)
            if problems:
                step = step_of(path) if _STEP_DIR.match(path.name) else None
                earlier = [p.name for p in list_checkpoints(path.parent) if step is not None and step_of(p) < step]
                hint = f"resume from an earlier one ({', '.join(earlier)})" if earlier else "start afresh"
                raise UserError(f"train.resume: {path} is damaged ({'; '.join(problems)}); {hint}")
            return path
        newest = newest_intact(list_checkpoints(RunLayout(path).checkpoints))
        if newest is not None:
            return newest
    raise UserError(
        f"train.resume: {value} is not a complete checkpoint (a checkpoints/step-N folder holding {STATE_FILE}) "
        "nor a run directory with one; give such a path, auto, or false"
    )


def resume_point(run_dir: Path, resume: str | bool, overwrite: bool, base_dir: Path | None = None) -> Path | None:
    """The checkpoint a run continues from (None: start afresh), after checking that the run directory allows it.

    `resume` and `overwrite` are train.resume and output.overwrite. Without resume, a run directory holding
    checkpoints of an unfinished run is refused unless overwrite (which deletes them); resuming a finished run
    is refused.
    """
    root = RunLayout(run_dir).checkpoints
    status = read_status(run_dir)
    if resume is False:
        existing = list_checkpoints(root)
        if existing and status.get("status") != "finished":
            if not overwrite:
                raise UserError(
                    f"{run_dir} holds checkpoints of an unfinished run (newest: {existing[-1].name}); add --resume "
                    "(or train.resume=auto) to continue it, or set output.overwrite=true to start afresh"
                )
            shutil.rmtree(root)
        return None
    if status.get("status") == "finished":
        raise _finished_error(run_dir, status)
    if resume is True or resume == "auto":
        return newest_intact(list_checkpoints(root))
    return _explicit_checkpoint(str(resume), base_dir)
