"""`tuneforge train`: the whole run, top to bottom."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from tuneforge.config.schema import DataSection, RunConfig
from tuneforge.data.build import build_dataset
from tuneforge.data.quality import DataReport
from tuneforge.data.templates import ensure_chat_template
from tuneforge.errors import UserError
from tuneforge.methods import METHODS, Method, MethodModels
from tuneforge.models.adapters import ADAPTERS, describe_trainable
from tuneforge.models.load import LoadedModel, load_model
from tuneforge.models.rundir import RunLayout, prepare_run_dir, save_model, write_model_card, write_status
from tuneforge.paths import data_cache_dir, replay_cache_dir
from tuneforge.progress import console
from tuneforge.train.base_distribution import record_base_distributions
from tuneforge.train.callbacks import LossPlot, MetricsLog
from tuneforge.train.distributed import World, join_world, leave_world
from tuneforge.train.environment import write_environment
from tuneforge.train.ewc import ElasticWeights, general_samples
from tuneforge.train.heap import return_freed_memory
from tuneforge.train.lifecycle import checkpoint_store, outcome_summary, start_point, write_outcome_section
from tuneforge.train.loop import LoopContext, LoopResult, train_loop
from tuneforge.train.precision import make_deterministic, seed_everything
from tuneforge.train.replay import replay_conversations
from tuneforge.train.reporters import check_reporters, close_reporters, open_reporters
from tuneforge.train.settings import LoopSettings, resume_guard, run_fingerprints
from tuneforge.train.sharding import check_sharding, shard_model, whole_model
from tuneforge.train.step import terminate_as_interrupt

__all__ = ["RunHook", "RunOutcome", "extra_models", "run_training"]

log = logging.getLogger(__name__)


class RunHook(Protocol):
    """Work done with the models around training (e.g. the before/after comparison of tuneforge.eval)."""

    def before_training(self, model: Any, tokenizer: Any) -> None:
        """Called with the base model, after the data is ready and before the adapter is applied."""

    def after_training(self, model: Any, tokenizer: Any, layout: RunLayout) -> dict[str, Any] | None:
        """Called with the trained model once it is saved; what it returns is kept in RunOutcome.reports."""


@dataclass
class RunOutcome:
    """Where the run went, how it ended, and what the hooks reported."""

    run_dir: Path
    result: LoopResult
    reports: list[dict[str, Any]]


def _absolute_paths(config: RunConfig, base_dir: Path | None) -> None:
    """Make local paths absolute so the saved config works from any directory."""
    for base in (Path.cwd(), base_dir):
        if base is None:
            continue
        candidate = base / config.model.name_or_path
        if candidate.exists():
            config.model.name_or_path = str(candidate.resolve())
            break
    config.data.train = [_local(entry, base_dir) for entry in config.data.train]
    config.plugins = [_local(entry, base_dir) for entry in config.plugins]


def _local(entry: str, base_dir: Path | None) -> str:
    """`entry` as an absolute path when it exists in the working directory or next to the config, else as is."""
    found = next((b / entry for b in (Path.cwd(), base_dir) if b is not None and (b / entry).exists()), None)
    return str(found.resolve()) if found else entry


def _load_data(config: RunConfig, method: Method, loaded: Any, base_dir: Path | None) -> tuple[list, list, DataReport]:
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
            replay_cache_dir(),
            base_dir,
            temperature=d.replay.temperature,
            answers=d.replay.answers,
        )
    d = method.data_section(d)  # e.g. classify reads rows of a text and its label
    prepared, cached = build_dataset(d, loaded.tokenizer, config.train.seed, base_dir, extra, data_cache_dir())
    report = prepared.report
    if d.replay is not None:
        report.merge_drops(replay_report)
    method.check_data(config.method.name, {s.kind for s in prepared.train})
    if method.select_data is not None:
        prepared.train, prepared.val = method.select_data(config, prepared.train, prepared.val, report)
    reused = " (tokenised data reused from the cache)" if cached else ""
    console.print(f"data: {report.summary()}; {len(prepared.train)} train / {len(prepared.val)} validation{reused}")
    for note in report.notes:
        console.print(f"  {note}")
    for problem in report.problems[:5]:
        console.print(f"  [yellow]{problem}[/]")
    if len(report.issues) > 5:
        console.print(f"  … {len(report.issues) - 5} more: see data_report.txt in the run directory")
    return prepared.train, prepared.val, report


def extra_models(method: Method, config: RunConfig, loaded: LoadedModel, base_dir: Path | None = None) -> MethodModels:
    """The tokenizer and the extra models `method` needs (reference, reward, teacher), frozen: copies of the base
    or loaded from their source (a relative path is looked up next to the config file too)."""
    models = MethodModels(tokenizer=loaded.tokenizer)
    for role, source in (method.needs(config) if method.needs is not None else {}).items():
        if source is None:
            model = copy.deepcopy(loaded.model)
        else:
            m = config.model
            local = base_dir / source if base_dir is not None else None
            source = str(local) if local is not None and local.exists() and not Path(source).exists() else source
            model = load_model(source, m.dtype, m.attn_implementation, m.trust_remote_code).model
        setattr(models, role, model.eval().requires_grad_(False))
    return models


def _replay_samples(config: RunConfig, method: Method, tokenizer: Any, base_dir: Path | None) -> list[Any]:
    """train.replay: the general data a share of every step comes from, rendered like the training data."""
    replay = config.train.replay
    if replay is None:
        return []
    d = config.data
    section = DataSection(
        train=replay.data, val_size=0, cutoff_len=d.cutoff_len, variables=d.variables, template=d.template,
        dedup="none", max_drop_ratio=1.0, packing=d.packing, cache=d.cache,
    )  # fmt: skip
    prepared, _ = build_dataset(section, tokenizer, config.train.seed, base_dir, cache_dir=data_cache_dir())
    if not prepared.train:
        raise UserError(f"train.replay: no usable sample in {', '.join(replay.data)} ({prepared.report.summary()})")
    method.check_data(config.method.name, {s.kind for s in prepared.train})
    console.print(
        f"replay: {len(prepared.train)} samples from {', '.join(replay.data)}, {replay.share:.0%} of every step's rows"
    )
    return prepared.train


def _ewc_samples(config: RunConfig, loaded: LoadedModel, base_dir: Path | None) -> list[Any]:
    """train.ewc: the base model's answers to general prompts, rendered ([] without EWC)."""
    ewc = config.train.ewc
    if ewc is None:
        return []
    m = config.model.name_or_path
    samples = general_samples(
        loaded, ewc.prompts, ewc.samples, ewc.max_new_tokens, config.data.cutoff_len, m, base_dir
    )
    if not samples:
        raise UserError(f"train.ewc: the base model gave no usable answer to the prompts of {ewc.prompts!r}")
    console.print(f"EWC: Fisher information from {len(samples)} answers to {ewc.prompts}, weight {ewc.weight:g}")
    return samples


def _record_environment(layout: RunLayout, config: RunConfig, resumed: bool) -> None:
    """environment.json; a resumed run whose environment changed since its checkpoint says so."""
    changes = write_environment(layout.environment, config.train.seed, config.train.deterministic, resumed)
    if changes:
        console.print(
            f"[yellow]note: since the run's earlier session {', '.join(changes)} changed (see "
            f"{layout.environment}): the rest of the run may differ slightly from an uninterrupted one[/]"
        )


def run_training(
    config: RunConfig, base_dir: Path | None = None, force: bool = False, hooks: tuple[RunHook, ...] = ()
) -> RunOutcome:
    """Run one training job as configured; everything it produces goes to config.output.dir.

    With train.resume it continues from a checkpoint; `force` resumes even when guarded config keys changed.
    `hooks` run with the base model before training and with the trained model at the end. SIGTERM stops the run
    as Ctrl-C does: during training it ends the step, saves a checkpoint and raises TrainingInterrupted.

    Started by a launcher (torchrun, accelerate launch) on several processes, it trains data-parallel (see
    tuneforge.train.distributed): every process trains, the main one alone writes the run directory, prints and
    runs the hooks.
    """
    world = join_world(config.train.fsdp)
    if not world.is_main:
        console.quiet = True  # for good: this process only trains; rank 0 speaks for the run
    try:
        with terminate_as_interrupt():
            return _run_training(config, base_dir, force, hooks, world)
    finally:
        leave_world(world)


def training_device(world: World) -> torch.device:
    """Where a model trains: each data-parallel process on its own GPU (LOCAL_RANK), a single process on the first
    GPU when there is one, else the CPU."""
    if world.parallel:
        return world.device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _place(model: Any, world: World, sharded: bool = False) -> Any:
    """Move a model loaded on the CPU to the training device (a quantised model is already placed on its GPU); a
    model to be `sharded` stays where it is (sharding moves each process's shard there)."""
    device = training_device(world)
    if device.type == "cuda" and next(model.parameters()).device.type == "cpu" and not sharded:
        return model.to(device)
    return model


def _rebuild(config: RunConfig, adapter: Any, method: Method, load_kwargs: dict[str, Any], world: World) -> Any:
    """A fresh base model with the run's adapter (and what the method adds), on the training device: the whole
    model a sharded run's trained weights are gathered into."""
    m = config.model
    fresh = load_model(m.name_or_path, m.dtype, m.attn_implementation, m.trust_remote_code, load_kwargs)
    model = adapter.attach(_place(fresh.model, world), config.adapter)
    if method.prepare is not None:
        method.prepare(model, config.method)
    return model


def _run_training(
    config: RunConfig, base_dir: Path | None, force: bool, hooks: tuple[RunHook, ...], world: World
) -> RunOutcome:
    started = time.perf_counter()
    main = world.is_main
    _absolute_paths(config, base_dir)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if config.train.return_freed_memory:
        return_freed_memory()
    if config.train.deterministic:
        make_deterministic(config.train.seed)
    seed_everything(config.train.seed)
    adapter = ADAPTERS.get(config.adapter.name)
    load_kwargs = adapter.load_kwargs(config.adapter) if adapter.load_kwargs else {}  # fails early (QLoRA, no GPU)
    method = METHODS.get(config.method.name)
    method.check_config(config)
    check_sharding(world, config, method, adapter)
    check_reporters(config.train.report_to)
    run_dir = Path(config.output.dir)
    # rank 0 decides where to start and prepares the run directory; the others only read it
    resume = world.broadcast(
        start_point(run_dir, config.train.resume, config.output.overwrite, base_dir) if main else None
    )
    run_dir = prepare_run_dir(config) if main else run_dir
    layout = RunLayout(run_dir)
    reporters: list[Any] = []
    plot: LossPlot | None = None
    try:
        if main:
            _record_environment(layout, config, resumed=resume is not None)
            reporters = open_reporters(config.train.report_to, run_dir, config.model_dump(mode="json"))
        console.print(f"loading model {config.model.name_or_path}")
        m = config.model
        loaded = load_model(m.name_or_path, m.dtype, m.attn_implementation, m.trust_remote_code, load_kwargs)
        loaded.model = _place(loaded.model, world, world.sharded)
        train, val, report = _load_data(config, method, loaded, base_dir)
        if main:
            layout.data_report.write_text(report.full_text(), encoding="utf-8")
        for hook in hooks if main else ():
            hook.before_training(loaded.model, loaded.tokenizer)
        if method.prepare_data is not None:
            method.prepare_data(train + val, loaded.model, config.method)
        if config.data.replay is not None and config.data.replay.target == "distribution":
            record_base_distributions(loaded.model, train + val)
        models = extra_models(method, config, loaded, base_dir)
        for role in ("reference", "reward", "teacher"):
            if getattr(models, role) is not None:
                setattr(models, role, _place(getattr(models, role), world))
        objective = method.bind(config.method, models)
        keep = _ewc_samples(config, loaded, base_dir)  # the old model's behaviour, before the adapter

        seed_everything(config.train.seed)
        model = adapter.attach(loaded.model, config.adapter)
        if method.prepare is not None:
            method.prepare(model, config.method)
        regularizer = ElasticWeights.from_model(model, keep, config.train.ewc.weight).penalty if keep else None
        trainable = describe_trainable(model)
        if world.sharded:
            world.broadcast_parameters(p for p in model.parameters() if p.requires_grad)
            shard_model(model, world)
        console.print(f"adapter {config.adapter.name}: {trainable}")
        if "packing" in config.data.model_fields_set and config.data.packing and not adapter.supports_packing:
            console.print(f"note: adapter {config.adapter.name} trains on padded batches (data.packing is ignored)")

        metrics = MetricsLog(layout.metrics if main else None)
        plot = LossPlot(metrics, layout.loss_plot, f"{run_dir.name}: {config.method.name}")
        packing = config.data.packing and adapter.supports_packing and method.packing
        settings = LoopSettings.from_config(config, packing, loaded.tokenizer.pad_token_id)
        fingerprints = {**run_fingerprints(resume_guard(config), train, val), "world_size": world.size}
        fingerprints["sharded"] = world.sharded  # a sharded run's optimizer state is laid out by parameter name
        world.check_same(fingerprints["data"], "data")
        t = config.train
        store = checkpoint_store(run_dir, t.save_steps, t.save_total_limit, fingerprints, resume, force)
        replay = _replay_samples(config, method, loaded.tokenizer, base_dir)
        context = LoopContext(
            plot if main else None, store, resume, reporters, adapter.parameter_groups, regularizer, replay, world
        )
        if world.rank:
            seed_everything(config.train.seed + world.rank)  # own dropout masks and samples; the weights came first
        result = train_loop(model, objective, train, val, settings, metrics, context)
        if world.sharded:  # rank 0 saves and compares a whole model, gathered from the shards
            model = whole_model(model, world, lambda: _rebuild(config, adapter, method, load_kwargs, world))
        if not main:
            return RunOutcome(run_dir, result, [])
        plot.draw()
        model.eval()
        save_model(model, loaded.tokenizer, layout.model)
        if method.save is not None:
            method.save(model, layout.model)
        if method.final_eval is not None:
            for line in method.final_eval(model, val, config.method, layout.eval):
                console.print(line, markup=False, highlight=False)
        reports = [r for hook in hooks if (r := hook.after_training(model, loaded.tokenizer, layout)) is not None]
    except BaseException as err:
        state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        if main and plot is not None and state == "interrupted":
            plot.draw()  # the curve up to the checkpoint just saved
        if main:
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
        **({"world_size": world.size} if world.parallel else {}),
    }
    write_model_card(run_dir, config, summary)
    write_outcome_section(run_dir, summary)
    # a resumed run's earlier interruption or failure is history now
    write_status(run_dir, "finished", clear=("error",), **{k: v for k, v in summary.items() if k != "trainable"})
    return RunOutcome(run_dir, result, reports)
