"""What to change when an estimated run does not fit its device: each change with the peak memory it leads to.

The changes, in the order they are offered: load the base quantised (an adapter whose registration declares
`quantized_weight_bits` and takes the current adapter's settings, e.g. QLoRA for LoRA, where this machine can run
it), freed memory given back to the system at once (CPU), a smaller micro-batch with more accumulation (padded
batches only: a packed micro-batch runs one pack per forward already), gradient checkpointing, a shorter cutoff_len.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FitInputs", "fitting_changes", "format_bytes", "format_seconds"]


def format_bytes(size: float) -> str:
    """Bytes as '512 MiB' / '3.2 GiB'."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def format_seconds(seconds: float) -> str:
    """Seconds as '45 s', '12 min', '3.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class FitInputs:
    """The numbers the advice is computed from (bytes unless named otherwise)."""

    total: int
    budget: int
    activations: int
    checkpointed_activations: int | None  # None: checkpointing already on, or the adapter cannot use it
    packing: bool
    batch_size: int
    grad_accum: int
    cutoff_len: int
    quantized: tuple[tuple[str, int], ...] = ()  # (adapter name, bytes it saves) for adapters this machine runs
    heap_kept: int = 0  # freed activations glibc would keep (train.return_freed_memory off, CPU)


def _line(setting: str, total: int, budget: int) -> str:
    verdict = "fits" if total <= budget else "still too much"
    return f"{setting} → ≈ {format_bytes(total)} ({verdict})"


def fitting_changes(inputs: FitInputs) -> tuple[str, ...]:
    """One line per change that lowers the peak, best first within each kind; () when the run fits."""
    if inputs.total <= inputs.budget:
        return ()
    lines = []
    for name, saving in inputs.quantized:
        lines.append(_line(f"adapter.name: {name} (base weights quantised)", inputs.total - saving, inputs.budget))
    if inputs.heap_kept:
        total = inputs.total - inputs.heap_kept
        lines.append(_line("train.return_freed_memory: true (steps about 20% slower)", total, inputs.budget))
    if not inputs.packing and inputs.batch_size > 1:
        half = inputs.batch_size // 2
        total = inputs.total - inputs.activations * (inputs.batch_size - half) // inputs.batch_size
        setting = f"train.batch_size: {half} with train.grad_accum: {inputs.grad_accum * inputs.batch_size // half}"
        lines.append(_line(setting, total, inputs.budget))
    if inputs.checkpointed_activations is not None:
        total = inputs.total - inputs.activations + inputs.checkpointed_activations
        lines.append(_line("train.gradient_checkpointing: true (about a third slower)", total, inputs.budget))
    for share in (2, 4):
        cutoff = inputs.cutoff_len // share
        if cutoff >= 16:
            total = inputs.total - inputs.activations + inputs.activations // share
            lines.append(_line(f"data.cutoff_len: {cutoff} (longer samples are cut)", total, inputs.budget))
    return tuple(lines)
