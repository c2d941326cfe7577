"""The model side of an estimate: the run's model with its adapter on the meta device, its extra models, the
heaviest micro-batch of its data, and that micro-batch's training step traced (see tuneforge.train.trace).

Nothing here reads weights: configs and tokenizers only. Parameter counts are exact (the adapter is attached to
the meta model by its own registration), optimizer state sizes are measured on a small tensor with the optimizer
the run builds, and the step is traced with the run's method collate, packing, precision and checkpointing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.methods import METHODS, Method
from tuneforge.models.adapters import ADAPTERS, AdapterSpec
from tuneforge.models.architecture import ModelFiles, fake_parameters, locate_model, meta_model, parameter_bytes
from tuneforge.models.hf import resolve_dtype
from tuneforge.train.batches import training_rows
from tuneforge.train.optim import build_optimizer
from tuneforge.train.precision import LARGE_MODEL_PARAMS, enable_gradient_checkpointing, upcast_trainable
from tuneforge.train.settings import LoopSettings
from tuneforge.train.trace import StepTrace, trace_step

__all__ = [
    "replay_samples_at_limit",
    "ModelCounts",
    "build_model",
    "checkpointing_wanted",
    "count_model",
    "extra_models",
    "heaviest_batch",
    "method_and_adapter",
    "model_source",
    "optimizer_states",
    "quantized_saving",
    "quantizing_alternatives",
    "synthetic_samples",
    "trace_workload",
]


@dataclass(frozen=True)
class ModelCounts:
    """Parameters of a model (with its adapter) and the bytes its weights take."""

    parameters: int
    trainable: int
    trainable_tensors: int
    weight_bytes: int
    quantized_saving: int = 0  # bytes the frozen linear weights would save if loaded quantised (see estimate)


def model_source(name_or_path: str, base_dir: Path | None) -> str:
    """A model path as `tuneforge train` resolves it: as given, or next to the config file."""
    if Path(name_or_path).expanduser().exists() or base_dir is None:
        return name_or_path
    beside = base_dir / name_or_path
    return str(beside) if beside.exists() else name_or_path


def quantized_saving(model: nn.Module, bits: float) -> int:
    """Bytes saved by storing the frozen linear weights (not the output head) at `bits` per element."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    saving = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not head and not module.weight.requires_grad:
            weight = module.weight
            saving += int(weight.numel() * (weight.element_size() - bits / 8))
    return saving


def build_model(config: RunConfig, hf_config: Any, adapter: AdapterSpec, method: Method) -> nn.Module:
    """The run's model on the meta device: base model, adapter, what the method adds; trainable weights float32."""
    m = config.model
    model = meta_model(hf_config, resolve_dtype(m.dtype), m.attn_implementation, m.trust_remote_code)
    with torch.device("meta"):
        model = (
            adapter.attach(model, config.adapter)
            if adapter.estimate_apply is None
            else adapter.estimate_apply(model, config.adapter)
        )
        if method.prepare is not None:
            method.prepare(model, config.method)
    upcast_trainable(model)
    return model


def count_model(model: nn.Module, adapter: AdapterSpec | None = None) -> ModelCounts:
    """The parameter and byte counts of a meta model."""
    total, trainable, frozen_bytes, trainable_bytes = parameter_bytes(model)
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    bits = adapter.quantized_weight_bits if adapter is not None else None
    saving = quantized_saving(model, bits) if bits is not None else 0
    return ModelCounts(total, trainable, tensors, frozen_bytes + trainable_bytes, saving)


def _extra_files(method: Method, config: RunConfig, base_dir: Path | None) -> list[tuple[str, ModelFiles | None]]:
    """(role, where its model is) for each extra model the method loads; None: a frozen copy of the base."""
    needs = method.needs(config) if method.needs is not None else {}
    return [
        (role, None if source is None else locate_model(model_source(source, base_dir)))
        for role, source in needs.items()
    ]


def extra_models(
    method: Method, config: RunConfig, base_config: Any, base_dir: Path | None
) -> list[tuple[str, nn.Module]]:
    """The extra models (reference, reward, teacher) as frozen meta models, by role."""
    m = config.model
    models = []
    for role, files in _extra_files(method, config, base_dir):
        hf_config = base_config if files is None else files.config(m.trust_remote_code)
        model = meta_model(hf_config, resolve_dtype(m.dtype), m.attn_implementation, m.trust_remote_code)
        models.append((role, model.requires_grad_(False)))
    return models


def optimizer_states(name: str) -> float:
    """Optimizer state elements per trainable parameter, measured with the optimizer a run builds (a 64×64
    matrix; factored optimizers such as Adafactor keep less for larger matrices)."""
    param = nn.Parameter(torch.zeros(64, 64))
    param.grad = torch.ones_like(param)
    optimizer = build_optimizer(name, [{"params": [param], "lr": 1e-3, "weight_decay": 0.0}], 1e-3)
    optimizer.step()
    states = optimizer.state[param].values()
    return sum(v.numel() for v in states if isinstance(v, torch.Tensor) and v.numel() > 1) / param.numel()


def synthetic_samples(cutoff_len: int, count: int = 4) -> list[RenderedSample]:
    """Samples that fill a pack of `cutoff_len` tokens, the second half of each supervised (when no data is read)."""
    length = max(2, cutoff_len // count)
    labels = [IGNORE_INDEX] * (length // 2) + [1] * (length - length // 2)
    return [RenderedSample([1] * length, list(labels)) for _ in range(count)]


def replay_samples_at_limit(config: RunConfig, tokenizer: Any, base_dir: Path | None) -> list[RenderedSample]:
    """data.replay's rows before the base model has answered: each prompt with an answer as long as
    data.replay.max_new_tokens allows (an upper bound: answers are cut back to their last whole sentence)."""
    from tuneforge.data.render import render_text
    from tuneforge.train.replay import REPLAY_DATASET, load_replay_prompts

    replay = config.data.replay
    if replay is None:
        return []
    samples = []
    for prompt in load_replay_prompts(replay.prompts, replay.limit, base_dir):
        text = render_text(tokenizer, [{"role": "user", "content": prompt}], generation=True)
        prompt_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        answer = replay.max_new_tokens + 2  # the end-of-turn marker and the newline after it
        length = min(prompt_tokens + answer, config.data.cutoff_len)
        labels = [IGNORE_INDEX] * min(prompt_tokens, length) + [1] * max(length - prompt_tokens, 0)
        samples.append(RenderedSample([1] * length, labels, dataset=REPLAY_DATASET))
    return samples


def heaviest_batch(
    method: Method, samples: list[RenderedSample], settings: LoopSettings
) -> tuple[dict[str, torch.Tensor], int]:
    """The forward pass with the most tokens, collated as the method collates it (with packing: the fullest pack,
    one forward each; else the longest samples padded into one micro-batch), and the number of rows in an epoch."""
    rows = training_rows(samples, settings)
    if settings.packing:
        row = max(rows, key=lambda r: sum(samples[i].total_tokens for i in r))
        return method.collate([samples[i] for i in row], True, settings.pad_id), len(rows)
    longest = sorted(range(len(samples)), key=lambda i: -samples[i].total_tokens)[: settings.batch_size]
    return method.collate([samples[i] for i in longest], False, settings.pad_id), len(rows)


def trace_workload(
    model: nn.Module,
    extras: list[nn.Module],
    batch: dict[str, torch.Tensor],
    autocast_dtype: torch.dtype | None,
    checkpointing: bool,
) -> StepTrace:
    """Trace one forward and backward of `batch` through `model` (meta; made fake here, so use it only once)."""
    fake_parameters(model)
    for extra in extras:
        fake_parameters(extra)
    if checkpointing:
        enable_gradient_checkpointing(model)
    autocast = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None else None
    return trace_step(model, batch, autocast, tuple(extras))


def checkpointing_wanted(config: RunConfig, adapter: AdapterSpec, parameters: int, device: torch.device) -> bool:
    """`train.gradient_checkpointing` as the run resolves it (auto: on CUDA for models over a billion parameters)."""
    setting = config.train.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    return adapter.gradient_checkpointing and device.type == "cuda" and parameters > LARGE_MODEL_PARAMS


def quantizing_alternatives(config: RunConfig, model: nn.Module) -> tuple[tuple[str, int], ...]:
    """(adapter name, bytes saved) for each registered adapter that takes the run's adapter settings, loads the
    base quantised, and can run on this machine (its `load_kwargs` accept the settings)."""
    from pydantic import ValidationError

    from tuneforge.errors import UserError

    current = ADAPTERS.get(config.adapter.name)
    found = []
    for name in ADAPTERS.names():
        spec = ADAPTERS.get(name)
        bits = spec.quantized_weight_bits
        if bits is None or spec is current or current.quantized_weight_bits is not None:
            continue
        if not issubclass(spec.params, type(config.adapter)):
            continue
        try:
            params = spec.params(**config.adapter.model_dump(exclude={"name"}))
            if spec.load_kwargs is not None:
                spec.load_kwargs(params)
        except (UserError, ValidationError, ImportError):
            continue
        found.append((name, quantized_saving(model, bits)))
    return tuple(found)


def method_and_adapter(config: RunConfig) -> tuple[Method, AdapterSpec]:
    """The run's registered method and adapter."""
    return METHODS.get(config.method.name), ADAPTERS.get(config.adapter.name)
