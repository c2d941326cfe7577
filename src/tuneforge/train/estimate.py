"""`tuneforge estimate`: memory and time of a training run, before any download or weight load.

Parameters come from the model's config (config.json, or a GGUF file's metadata) built on the meta device with the
adapter attached (exact counts); the data is prepared as the run prepares it (tokenised once, cached, so the run
reuses it); the heaviest micro-batch's training step is traced through the model without weights
(tuneforge.train.trace). Memory is the sum of
    runtime (Python + libraries, measured) + weights + gradients + optimizer states + extra models (reference,
    teacher, reward) + activations (what autograd keeps for backward, plus the largest temporary) + the data,
and time is the traced work priced at this machine's measured speeds (tuneforge.train.machine): matmul FLOPs at its
matmul rate, the bytes other operations write at its memory bandwidth, and a dispatch cost per operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import RunConfig
from tuneforge.data.build import build_dataset
from tuneforge.data.render import RenderedSample
from tuneforge.data.templates import ensure_chat_template
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.models.architecture import locate_model
from tuneforge.paths import data_cache_dir
from tuneforge.train.advice import FitInputs, fitting_changes, format_bytes, format_seconds
from tuneforge.train.batches import plan_steps
from tuneforge.train.machine import MachineSpeed, available_memory, machine_speed
from tuneforge.train.precision import compute_precision, resolve_precision
from tuneforge.train.settings import LoopSettings
from tuneforge.train.trace import StepTrace
from tuneforge.train.workload import (
    ModelCounts,
    build_model,
    checkpointing_wanted,
    count_model,
    extra_models,
    heaviest_batch,
    method_and_adapter,
    model_source,
    optimizer_states,
    quantizing_alternatives,
    replay_samples_at_limit,
    synthetic_samples,
    trace_workload,
)

__all__ = ["Estimate", "MemoryEstimate", "estimate_run"]

# Calibration, from measured CPU runs (tiny test models and the default model; see tests/unit/test_estimate.py):
TEMPORARY_FACTOR = 2.0  # a step's peak holds its saved activations plus about twice its largest tensor
# untraced temporaries on CPU (sft-lora-cpu bench: 2.10 GiB estimated, 2.16 measured); the CUDA allocator's reserve
ALLOCATOR_SLACK = {"cpu": 0.4, "cuda": 0.2}
HEAP_RETENTION = 1.0  # glibc's kept heap without train.return_freed_memory (default model: 2.76 GiB against 1.88)
TRAFFIC_FACTOR = 3.0  # memory-bound operations read about two bytes for every byte they write
MATMUL_EFFICIENCY = 0.52  # share of the square-matrix rate training reaches (fitted on the 3 CPU benchmark jobs)
OP_FACTOR = 2.5  # an operation recorded by autograd (and its backward) costs about 2.5 bare small adds
OPTIMIZER_OPS = 16  # operations per trainable tensor per optimizer step (clipping, AdamW update, zeroing)
LOOP_OPS = 5000  # the loop's own Python work per optimizer step (collation, metrics, progress), in small-op units
OPTIMIZER_BYTES = 40  # bytes moved per trainable parameter per optimizer step (weight, gradient, two moments)
DATA_BYTES_PER_TOKEN = 44  # a prepared token in memory: two list slots (ids, labels) and its int object
HEADROOM = 0.9  # share of the available memory a run may plan to use


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of the training process, by part (bytes)."""

    runtime: int
    weights: int
    gradients: int
    optimizer: int
    extra_models: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        return (
            self.runtime
            + self.weights
            + self.gradients
            + self.optimizer
            + self.extra_models
            + self.activations
            + self.data
        )

    def parts(self) -> list[tuple[str, int]]:
        """(name, bytes) of every part, in the order of the report."""
        return [
            ("runtime (Python, torch, transformers)", self.runtime),
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer states", self.optimizer),
            ("extra models (reference/teacher/reward)", self.extra_models),
            ("activations (largest micro-batch)", self.activations),
            ("prepared data", self.data),
        ]


@dataclass(frozen=True)
class Estimate:
    """The estimate of one training run."""

    config: RunConfig
    device: str
    device_name: str
    counts: ModelCounts
    memory: MemoryEstimate
    available: int
    batch_tokens: int
    checkpointing: bool
    flops_per_step: float
    step_seconds: float
    steps_per_epoch: int | None
    total_steps: int | None
    epoch_seconds: float | None
    advice: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.available * HEADROOM

    def summary(self) -> str:
        """One line: parameters, peak memory against the device, time per epoch."""
        c, cfg = self.counts, self.config
        verdict = "fits" if self.fits else "does NOT fit"
        line = (
            f"estimate: {c.parameters / 1e6:.1f}M parameters ({c.trainable / 1e6:.2f}M trainable, "
            f"{cfg.adapter.name}, {cfg.method.name}); peak memory ≈ {format_bytes(self.memory.total)} of "
            f"{format_bytes(self.available)} available on {self.device} ({verdict})"
        )
        if self.epoch_seconds is not None:
            line += f"; ≈ {format_seconds(self.epoch_seconds)} per epoch ({self.steps_per_epoch} steps)"
        return line

    def as_dict(self) -> dict[str, Any]:
        """The numbers, for `tuneforge estimate --json`."""
        keys = ("runtime", "weights", "gradients", "optimizer", "extra_models", "activations", "data")
        memory = dict(zip(keys, (size for _, size in self.memory.parts()), strict=True))
        return {
            "parameters": self.counts.parameters,
            "trainable": self.counts.trainable,
            "device": self.device,
            "device_name": self.device_name,
            "available_bytes": self.available,
            "fits": self.fits,
            "memory_bytes": {**memory, "total": self.memory.total},
            "batch_tokens": self.batch_tokens,
            "gradient_checkpointing": self.checkpointing,
            "flops_per_step": self.flops_per_step,
            "seconds_per_step": self.step_seconds,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "seconds_per_epoch": self.epoch_seconds,
            "advice": list(self.advice),
            "notes": list(self.notes),
        }

    def report(self) -> list[str]:
        """The full estimate, one line each."""
        c, t = self.counts, self.config.train
        lines = [
            f"model {self.config.model.name_or_path}: {c.parameters:,} parameters, {c.trainable:,} trainable "
            f"({100 * c.trainable / max(c.parameters, 1):.2f}%, adapter {self.config.adapter.name}), "
            f"method {self.config.method.name}",
            f"device: {self.device} — {self.device_name}; {format_bytes(self.available)} available",
            f"micro-batch: {self.batch_tokens} tokens per forward (batch_size {t.batch_size}, grad_accum "
            f"{t.grad_accum}, cutoff_len {self.config.data.cutoff_len}), gradient checkpointing "
            f"{'on' if self.checkpointing else 'off'}",
            "peak memory:",
            *[f"  {name:<42} {format_bytes(size):>10}" for name, size in self.memory.parts()],
            f"  {'total':<42} {format_bytes(self.memory.total):>10}  ({'fits' if self.fits else 'does NOT fit'})",
            f"time: {self.flops_per_step / 1e9:.1f} GFLOP per forward+backward of the largest micro-batch, "
            f"≈ {self.step_seconds:.2f} s each",
        ]
        if self.epoch_seconds is not None and self.total_steps is not None:
            lines.append(
                f"  ≈ {format_seconds(self.epoch_seconds)} per epoch ({self.steps_per_epoch} optimizer steps); "
                f"{self.total_steps} steps in the run"
            )
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"to fit: {advice}" for advice in self.advice]
        return lines


def _training_device(config: RunConfig) -> torch.device:
    """Where `tuneforge train` puts the model: where the adapter's loading places it (a quantised base on the GPU),
    a GPU per process under torchrun/accelerate, else the CPU."""
    import os

    from tuneforge.errors import UserError

    adapter = ADAPTERS.get(config.adapter.name)
    if adapter.load_kwargs is not None:
        try:
            placement = adapter.load_kwargs(config.adapter).get("device_map")
        except UserError:  # this machine cannot run the adapter; the run says so when it starts
            placement = None
        if isinstance(placement, dict) and placement:
            return torch.device(next(iter(placement.values())))
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cpu")


def _prepared_samples(config: RunConfig, tokenizer: Any, base_dir: Path | None) -> tuple[list, list]:
    data = METHODS.get(config.method.name).data_section(config.data)
    ensure_chat_template(tokenizer, data.template)
    prepared, _ = build_dataset(data, tokenizer, config.train.seed, base_dir, cache_dir=data_cache_dir())
    return prepared.train + replay_samples_at_limit(config, tokenizer, base_dir), prepared.val


@dataclass
class _Plan:
    """Everything the estimate computes from, before it is priced."""

    counts: ModelCounts
    extra_bytes: int
    trace: StepTrace
    rows: int | None
    forwards: int | None
    tokens: int | None
    data_tokens: int
    settings: LoopSettings
    checkpointing: bool
    can_checkpoint: bool
    layers: int
    hidden_size: int
    quantized: tuple[tuple[str, int], ...]
    precision: str


def _plan(config: RunConfig, base_dir: Path | None, device: torch.device, with_data: bool) -> _Plan:
    method, adapter = method_and_adapter(config)
    files = locate_model(model_source(config.model.name_or_path, base_dir))
    hf_config = files.config(config.model.trust_remote_code)
    model = build_model(config, hf_config, adapter, method)
    counts = count_model(model, adapter)
    quantized = quantizing_alternatives(config, model)
    extras = [m for _, m in extra_models(method, config, hf_config, base_dir)]
    extra_bytes = sum(count_model(m).weight_bytes for m in extras)
    packing = config.data.packing and adapter.supports_packing and method.packing
    tokenizer = files.tokenizer(config.model.trust_remote_code) if with_data else None
    pad_id = tokenizer.pad_token_id if tokenizer is not None else 0
    settings = LoopSettings.from_config(config, packing, pad_id or 0)
    train: list[RenderedSample] = synthetic_samples(config.data.cutoff_len)
    val: list[RenderedSample] = []
    if tokenizer is not None:
        train, val = _prepared_samples(config, tokenizer, base_dir)
        method.check_data(config.method.name, {s.kind for s in train})
    batch, rows = heaviest_batch(method, train, settings)
    forwards = rows if settings.packing else math.ceil(rows / settings.batch_size)
    checkpointing = checkpointing_wanted(config, adapter, counts.parameters, device)
    precision = compute_precision(resolve_precision(config.train.dtype, device), model)
    trace = trace_workload(model, extras, batch, precision.autocast_dtype, checkpointing)
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    return _Plan(
        counts=counts,
        extra_bytes=extra_bytes,
        trace=trace,
        rows=rows if with_data else None,
        forwards=forwards if with_data else None,
        tokens=sum(s.total_tokens for s in train) if with_data else None,
        data_tokens=sum(s.total_tokens for s in train + val) if with_data else 0,
        settings=settings,
        checkpointing=checkpointing,
        can_checkpoint=adapter.gradient_checkpointing,
        layers=int(getattr(text, "num_hidden_layers", 1) or 1),
        hidden_size=int(getattr(text, "hidden_size", 0) or 0),
        quantized=quantized,
        precision=precision.name,
    )


def _memory(plan: _Plan, config: RunConfig, speed: MachineSpeed, device: torch.device) -> MemoryEstimate:
    trainable_bytes = 4 * plan.counts.trainable
    live = plan.trace.saved_bytes + TEMPORARY_FACTOR * plan.trace.largest_bytes
    return MemoryEstimate(
        runtime=speed.runtime_bytes,
        weights=plan.counts.weight_bytes - plan.counts.quantized_saving,
        gradients=trainable_bytes,
        optimizer=int(trainable_bytes * optimizer_states(config.train.optimizer)),
        extra_models=plan.extra_bytes,
        activations=int(live * (1 + ALLOCATOR_SLACK.get(device.type, 0.0) + _heap_retention(config, device))),
        data=DATA_BYTES_PER_TOKEN * plan.data_tokens,
    )


def _heap_retention(config: RunConfig, device: torch.device) -> float:
    return HEAP_RETENTION if device.type == "cpu" and not config.train.return_freed_memory else 0.0


def _seconds(trace: StepTrace, speed: MachineSpeed, tokens: float, forwards: float) -> float:
    """Seconds of `forwards` forward+backward passes over `tokens` tokens, priced from the traced one."""
    share = tokens / max(trace.tokens, 1)
    work = (
        trace.flops / (speed.matmul_flops * MATMUL_EFFICIENCY) + TRAFFIC_FACTOR * trace.traffic_bytes / speed.bandwidth
    )
    return work * share + trace.ops * speed.op_seconds * OP_FACTOR * forwards


def _optimizer_seconds(counts: ModelCounts, speed: MachineSpeed) -> float:
    """Seconds of one optimizer step and the loop's bookkeeping around it."""
    return LOOP_OPS * speed.op_seconds + (
        counts.trainable_tensors * OPTIMIZER_OPS * speed.op_seconds
        + counts.trainable * OPTIMIZER_BYTES / speed.bandwidth
    )


def estimate_run(
    config: RunConfig,
    base_dir: Path | None = None,
    with_data: bool = True,
    probe_runtime: bool = True,
    remeasure: bool = False,
) -> Estimate:
    """Estimate memory and time of training `config` on this machine (see the module docstring).

    `with_data=False` skips reading the data: the largest micro-batch is then a full pack of cutoff_len tokens and
    there is no time per epoch. `probe_runtime=False` takes this process's own memory as the runtime's when the
    machine has not been measured yet (no child process); `remeasure` measures the machine again.
    """
    device = _training_device(config)
    plan = _plan(config, base_dir, device, with_data)
    speed = machine_speed(device, plan.precision, refresh=remeasure, probe_runtime=probe_runtime)
    memory = _memory(plan, config, speed, device)
    step_seconds = _seconds(plan.trace, speed, plan.trace.tokens, 1)
    epoch_seconds = steps = total = None
    if plan.tokens is not None and plan.forwards is not None and plan.rows is not None:
        steps, total = plan_steps(plan.rows, plan.settings)
        epoch_seconds = _seconds(plan.trace, speed, plan.tokens, plan.forwards) + steps * _optimizer_seconds(
            plan.counts, speed
        )
    estimate = Estimate(
        config=config,
        device=str(device),
        device_name=speed.device,
        counts=plan.counts,
        memory=memory,
        available=available_memory(device),
        batch_tokens=plan.trace.tokens,
        checkpointing=plan.checkpointing,
        flops_per_step=plan.trace.flops,
        step_seconds=step_seconds,
        steps_per_epoch=steps,
        total_steps=total,
        epoch_seconds=epoch_seconds,
        notes=_notes(config, plan.trace, device),
    )
    return replace(estimate, advice=fitting_changes(_fit_inputs(estimate, plan)))


def _notes(config: RunConfig, trace: StepTrace, device: torch.device) -> tuple[str, ...]:
    import os

    notes = []
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and load > cores:
        notes.append(
            f"this machine is busy (load {load:.1f} on {cores} cores): CPU training runs slower than estimated, "
            "several times so with more threads than free cores (train.num_threads)"
        )
    if trace.generated:
        notes.append(f"{config.method.name} generates answers in every step: that generation is not in the time")
    if config.data.replay is not None:
        notes.append("self-replay answers are counted at their length limit (data.replay.max_new_tokens)")
    if config.train.replay is not None or config.train.ewc is not None:
        notes.append("train.replay / EWC data is not included")
    return tuple(notes)


def _fit_inputs(estimate: Estimate, plan: _Plan) -> FitInputs:
    config, device = estimate.config, torch.device(estimate.device)
    t, kept = config.train, _heap_retention(config, device)
    activations = estimate.memory.activations
    checkpointed = None
    if not plan.checkpointing and plan.can_checkpoint:
        # layer inputs stay (hidden states of every layer), one layer's activations are recomputed at a time
        boundaries = plan.layers * plan.trace.tokens * plan.hidden_size * 4
        checkpointed = boundaries + activations // max(plan.layers, 1)
    return FitInputs(
        total=estimate.memory.total,
        budget=int(estimate.available * HEADROOM),
        activations=activations,
        checkpointed_activations=checkpointed,
        packing=plan.settings.packing,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        cutoff_len=estimate.config.data.cutoff_len,
        quantized=plan.quantized,
        heap_kept=int(activations * kept / (1 + ALLOCATOR_SLACK.get(device.type, 0.0) + kept)),
    )
