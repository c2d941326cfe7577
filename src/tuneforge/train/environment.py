"""environment.json: what a run's numbers depend on besides its config (versions, hardware, threads, settings).

Two runs of one config give bit-identical losses only on the same software, hardware and numeric settings; this
record says what those were, so that a difference can be explained instead of guessed at.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tuneforge.atomic import atomic_write_text

__all__ = ["NUMERIC_ENV_VARS", "PACKAGES", "describe_environment", "environment_changes", "write_environment"]

# Environment variables that change numerics or how work is split (thread counts, GPU choice, TF32, hashing).
NUMERIC_ENV_VARS = (
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
    "TOKENIZERS_PARALLELISM",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_TF32_OVERRIDE",
)
PACKAGES = ("tuneforge", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "numpy")
# What must match for bit-identical results; a resumed run that differs here gets a note.
_COMPARED = ("python", "packages", "cpu", "gpus", "threads", "numerics", "env")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    """The CPU model as the OS names it (/proc/cpuinfo on Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def describe_environment(seed: int, deterministic: bool) -> dict[str, Any]:
    """The software, hardware and numeric settings of this process, as environment.json records them."""
    cudnn = torch.backends.cudnn
    return {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": _gpus(),
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()},
        "seed": seed,
        "deterministic": deterministic,
        "numerics": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": cudnn.deterministic,
            "cudnn_benchmark": cudnn.benchmark,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "env": {name: os.environ.get(name) for name in NUMERIC_ENV_VARS},
    }


def environment_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The parts of `now` (python, packages, cpu, gpus, threads, numerics, env) that differ from `before`."""
    changed = []
    for key in _COMPARED:
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            changed.append(key)
    return changed


def write_environment(path: Path, seed: int, deterministic: bool, resumed: bool = False) -> list[str]:
    """Write environment.json for this process; returns what changed since the run's earlier session.

    A resumed run keeps the record of its earlier sessions under "earlier_sessions" (oldest first) and compares
    itself with the latest of them; a fresh run starts the record over.
    """
    record = describe_environment(seed, deterministic)
    earlier: list[dict[str, Any]] = []
    if resumed and path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict) and previous:
            earlier = [*previous.pop("earlier_sessions", []), previous]
    changes = environment_changes(earlier[-1], record) if earlier else []
    if earlier:
        record["earlier_sessions"] = earlier
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return changes
