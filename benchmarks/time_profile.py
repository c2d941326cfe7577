"""Where a CPU training step's time goes: matmuls, attention, the other operations, by phase of the step.

    python benchmarks/time_profile.py                              # sft-lora-cpu's config, 24 rows, 3 steps
    python benchmarks/time_profile.py --rows 48 adapter.name=full  # any override

Runs the benchmark job's tuneforge config in this process under torch.profiler, with the forward, backward and
optimizer phases marked (by wrapping the SFT loss, Tensor.backward and AdamW.step), and prints each phase's wall
time and the operations' own CPU time by kind, with the rate the matmuls reach (their FLOPs from the shapes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from memory_profile import profiled_run
from torch.profiler import ProfilerActivity, profile, record_function

import tuneforge.methods.sft as sft
from tuneforge.train.run import run_training

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
PHASES = ("forward", "backward", "optimizer")


def _marked(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(f"phase::{name}"):
            return function(*args, **kwargs)

    return wrapper


def _kind(name: str) -> str:
    if name in MATMULS:
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name.startswith("phase::"):
        return "phase"
    return "other operations"


def summarise(prof: Any) -> list[str]:
    """Lines: wall time per phase; own CPU time per kind of operation; the matmuls' achieved rate."""
    phases: dict[str, float] = defaultdict(float)
    kinds: dict[str, float] = defaultdict(float)
    flops = 0.0
    for event in prof.key_averages():
        kind = _kind(event.key)
        if kind == "phase":
            phases[event.key.removeprefix("phase::")] += event.cpu_time_total / 1e6
        else:
            kinds[kind] += event.self_cpu_time_total / 1e6
        if kind == "matmul":
            flops += event.flops or 0
    own = sum(kinds.values())
    lines = ["wall time by phase: " + ", ".join(f"{p} {phases[p]:.1f} s" for p in PHASES)]
    lines += [
        f"  {kind:18s} {seconds:6.1f} s own CPU time ({100 * seconds / own:.0f}%)" for kind, seconds in kinds.items()
    ]
    if kinds["matmul"]:
        lines.append(f"matmuls: {flops / 1e9:.0f} GFLOP at {flops / kinds['matmul'] / 1e9:.0f} GFLOP/s")
    return lines


def main() -> None:
    args, config = profiled_run(__doc__)
    sft.causal_lm_loss_sum = _marked("forward", sft.causal_lm_loss_sum)
    torch.Tensor.backward = _marked("backward", torch.Tensor.backward)
    torch.optim.AdamW.step = _marked("optimizer", torch.optim.AdamW.step)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        run_training(config)
    print(f"\n{args.rows} rows, {args.steps} steps, {' '.join(args.overrides) or 'defaults'}:")
    print("\n".join(summarise(prof)))


if __name__ == "__main__":
    main()
