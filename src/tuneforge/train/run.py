"""`tuneforge train`: the whole run, top to bottom."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import RunConfig
from tuneforge.data.build import build_dataset, data_cache_dir
from tuneforge.data.quality import DataReport
from tuneforge.data.replay import replay_conversations
from tuneforge.data.templates import ensure_chat_template
from tuneforge.errors import UserError
from tuneforge.eval.session import base_answers, finish_comparison
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS, describe_trainable
from tuneforge.models.load import load_model
from tuneforge.models.zoo import tuneforge_home
from tuneforge.train.artifacts import prepare_run_dir, save_model, write_model_card, write_status
from tuneforge.train.callbacks import MetricsLog, plot_losses
from tuneforge.train.lifecycle import loop_context, outcome_summary, start_point, write_outcome_section
from tuneforge.train.loop import LoopResult, LoopSettings, train_loop
from tuneforge.train.precision import make_deterministic, seed_everything
from tuneforge.train.progress import console
from tuneforge.train.reporters import check_reporters, close_reporters, open_reporters

__all__ = ["RunOutcome", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """Where the run went and how it ended."""

    run_dir: Path
    result: LoopResult
    comparison: dict[str, Any] | None


def _absolute_paths(config: RunConfig, base_dir: Path | None) -> None:
    """Make local paths absolute so the saved config works from any directory."""
    for base in (Path.cwd(), base_dir):
        if base is None:
            continue
        candidate = base / config.model.name_or_path
        if candidate.exists():
            config.model.name_or_path = str(candidate.resolve())
            break
    resolved = []
    for entry in config.data.train:
        found = next((b / entry for b in (Path.cwd(), base_dir) if b is not None and (b / entry).exists()), None)
        resolved.append(str(found.resolve()) if found else entry)
    config.data.train = resolved


def _seed_everything(seed: int) -> None:
    seed_everything(seed)


def _loop_settings(config: RunConfig, pad_id: int) -> LoopSettings:
    t = config.train
    return LoopSettings(
        learning_rate=t.learning_rate,
        epochs=t.epochs,
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        scheduler=t.scheduler,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        seed=t.seed,
        eval_steps=t.eval_steps,
        logging_steps=t.logging_steps,
        packing=config.data.packing and ADAPTERS.get(config.adapter.name).supports_packing,
        cutoff_len=config.data.cutoff_len,
        pad_id=pad_id,
        optimizer=t.optimizer,
        warmup_steps=t.warmup_steps,
        layer_lr_decay=t.layer_lr_decay,
        dtype=t.dtype,
        gradient_checkpointing=t.gradient_checkpointing,
        early_stopping_patience=t.early_stopping_patience,
    )


def _load_data(config: RunConfig, loaded: Any, base_dir: Path | None) -> tuple[list, list, DataReport]:
    d = config.data
    ensure_chat_template(loaded.tokenizer, d.template)
    extra = []
    if d.replay is not None:
        replay_report = DataReport()
        extra = replay_conversations(
            loaded.model,
            loaded.tokenizer,
            config.model.name_or_path,
            d.replay.prompts,
            d.replay.max_new_tokens,
            d.replay.limit,
            replay_report,
            tuneforge_home() / "replay",
            base_dir,
        )
    prepared, cached = build_dataset(d, loaded.tokenizer, config.train.seed, base_dir, extra, data_cache_dir())
    report = prepared.report
    if d.replay is not None:
        report.merge_drops(replay_report)
    _check_kinds(prepared.train, config.method.name)
    reused = " (tokenised data reused from the cache)" if cached else ""
    console.print(f"data: {report.summary()}; {len(prepared.train)} train / {len(prepared.val)} validation{reused}")
    for note in report.notes:
        console.print(f"  {note}")
    for problem in report.problems[:5]:
        console.print(f"  [yellow]{problem}[/]")
    if len(report.issues) > 5:
        console.print(f"  … {len(report.issues) - 5} more: see data_report.txt in the run directory")
    return prepared.train, prepared.val, report


_METHOD_KINDS = {"sft": {"chat", "text"}}


def _check_kinds(samples: list, method: str) -> None:
    """Refuse data the method cannot learn from (e.g. preference pairs for plain SFT)."""
    kinds = {s.kind for s in samples}
    wrong = kinds - _METHOD_KINDS.get(method, kinds)
    if wrong:
        raise UserError(
            f"method {method!r} trains on conversations and raw text, but the data holds {', '.join(sorted(wrong))} "
            "samples (chosen/rejected pairs or KTO labels); use conversation data, or a method built for them"
        )


def run_training(config: RunConfig, base_dir: Path | None = None, force: bool = False) -> RunOutcome:
    """Run one training job as configured; everything it produces goes to config.output.dir.

    With train.resume it continues from a checkpoint; `force` resumes even when guarded config keys changed.
    """
    started = time.perf_counter()
    _absolute_paths(config, base_dir)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if config.train.deterministic:
        make_deterministic(config.train.seed)
    _seed_everything(config.train.seed)
    adapter = ADAPTERS.get(config.adapter.name)
    load_kwargs = adapter.load_kwargs(config.adapter) if adapter.load_kwargs else {}  # fails early (QLoRA, no GPU)
    method = METHODS.get(config.method.name)
    check_reporters(config.train.report_to)
    resume = start_point(config, base_dir)
    run_dir = prepare_run_dir(config)
    reporters: list[Any] = []
    try:
        reporters = open_reporters(config.train.report_to, run_dir, config.model_dump(mode="json"))
        console.print(f"loading model {config.model.name_or_path}")
        m = config.model
        loaded = load_model(m.name_or_path, m.dtype, m.attn_implementation, m.trust_remote_code, load_kwargs)
        train, val, report = _load_data(config, loaded, base_dir)
        (run_dir / "data_report.txt").write_text(report.full_text(), encoding="utf-8")

        before = base_answers(loaded.model, loaded.tokenizer, config.eval, config.data.variables, base_dir)

        _seed_everything(config.train.seed)
        model = adapter.apply(loaded.model, config.adapter)
        trainable = describe_trainable(model)
        console.print(f"adapter {config.adapter.name}: {trainable}")
        if "packing" in config.data.model_fields_set and config.data.packing and not adapter.supports_packing:
            console.print(f"note: adapter {config.adapter.name} trains on padded batches (data.packing is ignored)")

        metrics = MetricsLog(run_dir / "metrics.jsonl")
        plot = lambda: plot_losses(metrics, run_dir / "loss.png", f"{run_dir.name}: {config.method.name}")  # noqa: E731
        settings = _loop_settings(config, loaded.tokenizer.pad_token_id)
        context = loop_context(config, run_dir, (train, val), resume, force, (plot, reporters, adapter))
        result = train_loop(model, method, train, val, settings, metrics, context=context)
        plot()
        model.eval()
        save_model(model, loaded.tokenizer, run_dir / "model")

        comparison = None
        if before is not None:
            comparison = finish_comparison(model, loaded.tokenizer, before, config.eval, run_dir / "eval")
    except BaseException as err:
        state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        write_status(run_dir, state, error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    finally:
        close_reporters(reporters)
    summary = {
        "train_samples": len(train),
        "val_samples": len(val),
        "data_summary": report.summary(),
        "steps": result.steps,
        "epochs": result.epochs,
        "final_loss": result.final_loss,
        "final_val_loss": result.final_val_loss,
        "trainable": trainable,
        "tokens_per_s": result.tokens_per_s,
        "seconds": time.perf_counter() - started,
        **outcome_summary(result, metrics),
    }
    write_model_card(run_dir, config, summary)
    write_outcome_section(run_dir, summary)
    write_status(run_dir, "finished", **{k: v for k, v in summary.items() if k != "trainable"})
    return RunOutcome(run_dir, result, comparison)
