"""How the training step runs on the hardware: autocast precision, loss scaling, gradient checkpointing, seeds.

Trained weights are always float32 master copies; `train.dtype` only picks the autocast precision of the
forward pass. fp16 needs CUDA and a GradScaler; bf16 works on CUDA with bf16 support and on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.errors import UserError
from tuneforge.models.adapters import adapter_of, adapter_params_of

__all__ = [
    "TRAIN_DTYPES",
    "Amp",
    "Precision",
    "compute_precision",
    "enable_gradient_checkpointing",
    "make_deterministic",
    "model_device",
    "nondeterminism_error",
    "resolve_gradient_checkpointing",
    "resolve_precision",
    "seed_everything",
    "upcast_trainable",
]

LARGE_MODEL_PARAMS = 1_000_000_000
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
TRAIN_DTYPES = ("auto", "fp32", *_AUTOCAST)  # train.dtype


@dataclass(frozen=True)
class Precision:
    """The resolved `train.dtype`: fp32, bf16 or fp16 autocast on `device_type`."""

    name: str
    device_type: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for the forward pass (a no-op for fp32)."""
        dtype = self.autocast_dtype
        return torch.autocast(self.device_type, dtype=dtype) if dtype else contextlib.nullcontext()


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def resolve_precision(dtype: str, device: torch.device) -> Precision:
    """`train.dtype` (auto|fp32|bf16|fp16) for a model on `device`; impossible combinations are user errors."""
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if dtype == "auto":
        return Precision("bf16" if bf16_ok else "fp32", device.type)
    if dtype == "fp16" and not cuda:
        raise UserError("train.dtype=fp16 needs a CUDA GPU (the model is on the CPU); use bf16 or fp32")
    if dtype == "bf16" and cuda and not bf16_ok:
        raise UserError("train.dtype=bf16: this GPU has no bfloat16 support; use fp16 or fp32")
    return Precision(dtype, device.type)


def compute_precision(precision: Precision, model: Any) -> Precision:
    """`precision`, or autocast in the weights' own dtype when it asks for fp32 but frozen weights are 16-bit.

    The trained weights become float32 copies; the forward pass must still agree with the 16-bit frozen ones.
    """
    if precision.autocast_dtype is not None:
        return precision
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if dtype in dtypes:
            return Precision(name, precision.device_type)
    return precision


@dataclass
class Amp:
    """Autocast plus, for fp16, a GradScaler: how a step runs backward and updates."""

    precision: Precision
    scaler: Any = None

    @classmethod
    def create(cls, precision: Precision) -> Amp:
        scaler = torch.amp.GradScaler(precision.device_type) if precision.name == "fp16" else None
        return cls(precision, scaler)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()


def upcast_trainable(model: Any) -> int:
    """Make every trainable parameter float32 (the master copy); returns how many were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def resolve_gradient_checkpointing(setting: str | bool, model: Any) -> bool:
    """`train.gradient_checkpointing`: auto = on for models over 1B parameters on CUDA."""
    if setting != "auto":
        return bool(setting)
    adapter = adapter_of(model)
    if adapter is not None and not adapter.gradient_checkpointing:
        return False
    if model_device(model).type != "cuda":
        return False
    return sum(p.numel() for p in model.parameters()) > LARGE_MODEL_PARAMS


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing; inputs require grad so frozen embeddings (PEFT) still backprop."""
    kwargs = {"use_reentrant": False}
    adapter, params = adapter_of(model), adapter_params_of(model)
    if adapter is not None and not adapter.gradient_checkpointing:
        name = params.name if params is not None else "this"
        raise UserError(
            f"train.gradient_checkpointing cannot be used with the {name} adapter (it keeps its virtual tokens in "
            "the attention cache, which checkpointing turns off); set train.gradient_checkpointing: false"
        )
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name of the same switch
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise UserError(f"train.gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)


def make_deterministic(seed: int) -> None:
    """`train.deterministic`: deterministic kernels only, cuBLAS workspace, no cuDNN autotuning, fixed seeds.

    An operation without a deterministic kernel is an error (see `nondeterminism_error`), never a warning: a run
    that says it is bit-reproducible must be. Call it before CUDA starts (cuBLAS reads its variable then).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    seed_everything(seed)


_NONDETERMINISTIC = ("does not have a deterministic implementation", "but this operation is not deterministic")


def nondeterminism_error(err: BaseException) -> UserError | None:
    """The user's view of PyTorch refusing a non-deterministic operation under train.deterministic (else None)."""
    text = str(err)
    mark = next((m for m in _NONDETERMINISTIC if m in text), None)
    if mark is None:
        return None
    operation = text.split(mark)[0].strip().rstrip(",") or "an operation"
    return UserError(
        f"train.deterministic: {operation[:120]} has no deterministic implementation here, so this run cannot be "
        "bit-reproducible. Set train.deterministic: false to train anyway (results then vary slightly between "
        "runs), or use another device or model"
    )
