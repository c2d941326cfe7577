"""Peak resident memory of a tuneforge training run, by phase of the step: where a CPU run's memory goes.

    python benchmarks/memory_profile.py                              # sft-lora-cpu's config, 24 rows, 3 steps
    python benchmarks/memory_profile.py --rows 64 train.return_freed_memory=false   # any override

Runs the benchmark job's tuneforge config in this process, samples this process's RSS every 2 ms from a thread,
and books each sample to the phase the training step is in (forward, backward, optimizer, between them), by
wrapping the SFT loss, Tensor.backward and AdamW.step. Prints the peak of each phase, in GiB, in order of size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jobs
import tf_runner
import torch

import tuneforge.methods.sft as sft
from tuneforge.config.load import load_config
from tuneforge.config.schema import RunConfig
from tuneforge.train.run import run_training

SOURCE = jobs.DATA_DIR / "alpaca_en_demo.json"


class PhaseMemory:
    """Peak RSS per phase, sampled by a background thread while `phase` names what the step is doing."""

    def __init__(self) -> None:
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss()
            if rss > self.peaks.get(self.phase, 0):
                self.peaks[self.phase] = rss
            time.sleep(0.002)

    def __enter__(self) -> PhaseMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.01)
        self._stop.set()
        self._thread.join()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _booked(memory: PhaseMemory, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, booking the time it runs to phase `name` and what follows to "after `name`"."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        memory.phase = name
        try:
            return function(*args, **kwargs)
        finally:
            memory.phase = f"after {name}"

    return wrapper


def profiled_run(description: str) -> tuple[argparse.Namespace, RunConfig]:
    """The command line of a profile (--rows, --steps, overrides) and the sft-lora-cpu job's config it asks for."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24, help="rows of alpaca_en_demo.json to train on")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for tuneforge train")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tf-profile-"))
    data = work / "rows.json"
    data.write_text(json.dumps(json.loads(SOURCE.read_text(encoding="utf-8"))[: args.rows]), encoding="utf-8")
    raw = jobs.tuneforge_config(jobs.JOBS["sft-lora-cpu"], data, "smollm2-135m-instruct", work / "run")
    overrides = [f"train.max_steps={args.steps}", *args.overrides]
    return args, load_config(tf_runner.write_config(raw, work / "config.yaml"), overrides)


def main() -> None:
    args, config = profiled_run(__doc__)
    with PhaseMemory() as memory:
        sft.causal_lm_loss_sum = _booked(memory, "forward", sft.causal_lm_loss_sum)
        torch.Tensor.backward = _booked(memory, "backward", torch.Tensor.backward)
        torch.optim.AdamW.step = _booked(memory, "optimizer", torch.optim.AdamW.step)
        memory.phase = "loading and data"
        run_training(config)
        memory.phase = "end"
    print(f"\npeak RSS by phase ({args.rows} rows, {args.steps} steps, {' '.join(args.overrides) or 'defaults'}):")
    for phase, peak in sorted(memory.peaks.items(), key=lambda item: item[1]):
        print(f"  {phase:18s} {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
