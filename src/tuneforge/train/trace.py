"""One training forward and backward traced through a model without weights: what it computes and keeps.

The model's parameters are fake tensors (see tuneforge.models.architecture): every operation runs on shapes only,
so a 7B model traces in seconds on a laptop. The inputs are real (token ids, position ids, masks), which keeps the
code paths that look at their values (packed-sequence detection, supervised positions) exactly the training ones.

Three things are counted while the step runs:
- FLOPs of matmuls and attention (torch's FlopCounterMode), forward and backward, checkpoint recomputation included;
- every other operation and the bytes it writes (memory-bound work: norms, activations, adds, copies);
- the activations autograd keeps for the backward pass (saved tensors, parameters excluded, shared storage once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tuneforge.data.render import IGNORE_INDEX
from tuneforge.methods.loss import causal_lm_loss_sum

__all__ = ["StepTrace", "token_loss_sum", "trace_step"]

# operations that only make views or metadata: they cost a dispatch, never memory traffic
_VIEWS = frozenset(
    "view t transpose detach unsqueeze squeeze expand slice _unsafe_view alias permute as_strided select "
    "_reshape_alias split split_with_sizes unbind lift_fresh".split()
)
_MODEL_INPUTS = ("input_ids", "position_ids", "attention_mask", "targets")


@dataclass
class StepTrace:
    """What one forward + backward of a micro-batch does (the extra models' no-grad forwards included)."""

    tokens: int = 0
    flops: float = 0.0
    traffic_bytes: float = 0.0
    ops: int = 0
    saved_bytes: int = 0
    largest_bytes: int = 0
    generated: bool = False  # the method generates answers in its step (not traced: the answers' forward is)
    kernels: dict[str, int] = field(default_factory=dict)


def _storage_key(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage()._cdata)


class _OpCounter(TorchDispatchMode):
    """Counts operations and the bytes written by those that are not matmuls or views."""

    def __init__(self, trace: StepTrace, matmuls: frozenset[str]) -> None:
        super().__init__()
        self.trace = trace
        self.matmuls = matmuls

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.namespace == "prim" or name in _VIEWS:
            return out
        self.trace.ops += 1
        written = sum(t.numel() * t.element_size() for t in _tensors(out))
        self.trace.largest_bytes = max(self.trace.largest_bytes, written)
        if name not in self.matmuls:
            self.trace.traffic_bytes += written
        return out


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


@contextlib.contextmanager
def _saved_activations(trace: StepTrace, parameters: set[int]) -> Iterator[None]:
    """Sum the distinct storages autograd saves for backward, parameters left out."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in parameters and key not in seen:
            seen[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield
    trace.saved_bytes += sum(seen.values())


def _model_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model reads of a method's micro-batch; every position supervised when it has no targets.

    A batch without input_ids (a method that generates answers to its prompts first, such as GRPO) is traced as
    its id tensors side by side (prompt_ids + answer_ids: the sequences its loss reads), padding masked.
    """
    inputs = {key: value for key, value in batch.items() if key in _MODEL_INPUTS}
    if "input_ids" not in inputs:
        names = [key for key, value in batch.items() if key.endswith("_ids") and value.dim() == 2]
        inputs["input_ids"] = torch.cat([batch[key] for key in names], dim=1)
        masks = [batch.get(f"{key[: -len('_ids')]}_mask", torch.ones_like(batch[key])) for key in names]
        inputs["attention_mask"] = torch.cat(masks, dim=1).long()
        inputs["targets"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, IGNORE_INDEX)
    if "targets" not in inputs:
        inputs["targets"] = inputs["input_ids"].clone()
    return inputs


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU attention kernels, which torch's counter leaves out (its formulas cover the GPU
    ones); the same count as theirs: the two attention matmuls forward, five backward."""
    from torch.utils import flop_counter

    def forward(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query, key, value))

    def backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_backward_flop_count(grad_out, query, key, value))

    formulas: dict[Any, Callable[..., int]] = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):  # fmt: skip
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_counter.flop_registry:
            formulas[op] = formula
    return formulas


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The summed token loss exactly as training computes it (tuneforge.methods.loss.causal_lm_loss_sum)."""
    return causal_lm_loss_sum(model, batch)


def _counted(trace: StepTrace, work: Callable[[], None]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
    matmuls = frozenset(str(op.__name__) for op in counter.flop_registry)
    with counter, _OpCounter(trace, matmuls):
        work()
    trace.flops += counter.get_total_flops()
    for op, count in counter.get_flop_counts().get("Global", {}).items():
        trace.kernels[str(op)] = trace.kernels.get(str(op), 0) + int(count)


def trace_step(
    model: Any,
    batch: dict[str, torch.Tensor],
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    extra_models: tuple[Any, ...] = (),
) -> StepTrace:
    """Trace the token loss of `batch` through `model` (fake parameters), its backward, and a no-grad forward of
    each of `extra_models` (reference, teacher, reward model) on the same batch."""
    inputs = _model_batch(batch)
    trace = StepTrace(tokens=int(inputs["input_ids"].numel()), generated="input_ids" not in batch)
    parameters = {_storage_key(p) for p in model.parameters()}
    model.train()

    def step() -> None:
        with autocast or contextlib.nullcontext(), _saved_activations(trace, parameters):
            loss = token_loss_sum(model, inputs)
        loss.backward()
        for extra in extra_models:
            with torch.no_grad(), autocast or contextlib.nullcontext():
                token_loss_sum(extra, inputs)

    _counted(trace, step)
    return trace
