"""The parts of a run around the loop: where it starts (afresh or from a checkpoint), what the loop is wired to,
and how the outcome is summarised (best step, early stop, verdict) in run.json, the model card and the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_write_text
from tuneforge.models.rundir import RunLayout
from tuneforge.progress import console
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.checkpoint import FORMAT, CheckpointStore, read_trainer_state, resume_point
from tuneforge.train.loop import LoopResult
from tuneforge.train.settings import check_compatible
from tuneforge.train.verdict import diagnose

__all__ = ["checkpoint_store", "describe_outcome", "outcome_summary", "start_point", "write_outcome_section"]


def start_point(run_dir: Path, resume: str | bool, overwrite: bool, base_dir: Path | None) -> Path | None:
    """The checkpoint to resume from (None: afresh), announced; refuses run directories that do not allow it.

    `resume` and `overwrite` are train.resume and output.overwrite.
    """
    path = resume_point(run_dir, resume, overwrite, base_dir)
    if path is not None:
        console.print(f"resuming from {path} (step {read_trainer_state(path)['step']})")
    elif resume is not False:
        console.print(f"[yellow]no checkpoint under {RunLayout(run_dir).checkpoints}: starting afresh[/]")
    return path


def checkpoint_store(
    run_dir: Path,
    every: int | None,
    keep: int | None,
    fingerprints: dict[str, Any],
    resume: Path | None,
    force: bool,
) -> CheckpointStore:
    """Where and when the run checkpoints (train.save_steps, train.save_total_limit), stamped with `fingerprints`.

    When resuming, the checkpoint's fingerprints are checked against these first: a changed model, data, method,
    adapter, batch layout, number of processes (world_size), sharding (FSDP) or learning-rate schedule is an error unless `force`.
    """
    if resume is not None:
        saved = read_trainer_state(resume)
        hashed = saved.get("format", 1) < FORMAT  # written before plain values were kept
        # a checkpoint from before data-parallel runs was written by a single process
        saved_prints = {"world_size": 1, "sharded": False, **saved.get("fingerprints", {})}
        changed = check_compatible(saved_prints, fingerprints, resume, force, hashed)
        if changed:
            console.print(f"[yellow]--force: resuming although {', '.join(changed)} changed[/]")
    return CheckpointStore(RunLayout(run_dir).checkpoints, every, keep, fingerprints)


def outcome_summary(result: LoopResult, metrics: MetricsLog) -> dict[str, Any]:
    """run.json fields about how training went: best step, early stop, resume and the verdict."""
    verdict = diagnose(metrics.records)
    summary: dict[str, Any] = {
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "restored_best": result.restored_best,
        "verdict": verdict.as_dict(),
    }
    if result.resumed_from is not None:
        summary["resumed_from_step"] = result.resumed_from
    return summary


def describe_outcome(summary: dict[str, Any]) -> list[str]:
    """Plain sentences about the best step and the verdict (model card and console)."""
    lines = []
    if summary.get("best_step") is not None:
        where = "the saved model is from that step" if summary.get("restored_best") else "see metrics.jsonl"
        lines.append(f"Best validation loss {summary['best_val_loss']:.4f} at step {summary['best_step']} ({where}).")
    if summary.get("stopped_early"):
        lines.append("Early stopping ended the run: validation loss stopped improving.")
    verdict = summary["verdict"]
    lines.append(f"Verdict: {verdict['kind']}: {verdict['evidence']}. {verdict['advice']}.")
    return lines


def write_outcome_section(run_dir: Path, summary: dict[str, Any]) -> None:
    """Add a 'Training outcome' section to the run's README.md."""
    card = RunLayout(run_dir).model_card
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    section = "\n".join(["## Training outcome", "", *describe_outcome(summary), ""])
    atomic_write_text(card, text.rstrip("\n") + "\n\n" + section)
