"""How fast this machine trains and how much memory a training process needs before any model: measured once.

Four numbers, cached under $TUNEFORGE_HOME/machine/ per device, compute dtype, thread count and library versions:
- matmul FLOP/s on transformer-sized matrices;
- memory bandwidth of elementwise work (bytes written per second by an add over large tensors);
- the cost of one small operation (Python and dispatch overhead, which dominates small models);
- the resident memory of a process that imported the training stack and ran one tiny training step (Python,
  torch, transformers, peft, the plotting library), measured in a child process so nothing else counts.
A CPU entry measured while other work loaded the machine more than now is measured again, keeping the faster figures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from tuneforge.atomic import atomic_write_text
from tuneforge.paths import tuneforge_home

__all__ = ["MachineSpeed", "available_memory", "device_name", "machine_speed", "peak_resident_memory"]

_VERSION = 2  # 2: entries record the load they were measured at
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# one tiny training step in a fresh process; prints its peak resident memory in bytes (see peak_resident_memory)
_RUNTIME_PROBE = """
import sys, io
from tuneforge.train.machine import peak_resident_memory
import torch, transformers, peft
import tuneforge.train.run, tuneforge.eval.session
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=8)
model = LlamaForCausalLM(config)
optimizer = torch.optim.AdamW(model.parameters())
ids = torch.zeros(1, 8, dtype=torch.long)
model(input_ids=ids, labels=ids).loss.backward()
optimizer.step()
figure = plt.figure()
plt.plot([1, 2], [1, 2])
figure.savefig(io.BytesIO(), format="png")
print(peak_resident_memory())
"""


@dataclass(frozen=True)
class MachineSpeed:
    """Measured speeds of one device at one compute dtype (see the module docstring)."""

    device: str
    dtype: str
    matmul_flops: float
    bandwidth: float
    op_seconds: float
    runtime_bytes: int
    load_per_core: float = 0.0  # the machine's load when the speeds were measured (1-minute average per core)


def device_name(device: torch.device) -> str:
    """A readable name: the GPU's name, or the CPU's model with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    return f"{model} ({torch.get_num_threads()} threads)"


def available_memory(device: torch.device) -> int:
    """Bytes a training run can use now: the GPU's free memory, or the memory the OS reports as available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def _best_seconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timings of `work` (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _matmul_flops(device: torch.device, dtype: torch.dtype) -> float:
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    rounds = 20 if device.type == "cuda" else 2

    def work() -> None:
        for _ in range(rounds):
            torch.mm(a, b)

    work()
    return 2 * size**3 * rounds / _best_seconds(work, device, 5)


def _bandwidth(device: torch.device) -> float:
    numel = 64 * 2**20 if device.type == "cuda" else 8 * 2**20
    x, y = torch.ones(numel, device=device), torch.ones(numel, device=device)
    out = torch.empty_like(x)
    work = lambda: torch.add(x, y, out=out)  # noqa: E731
    work()
    return 3 * numel * 4 / _best_seconds(work, device, 10)  # two tensors read, one written


def _op_seconds(device: torch.device) -> float:
    x = torch.ones(4, device=device)
    rounds = 2000

    def work() -> None:
        for _ in range(rounds):
            torch.add(x, x)

    work()
    return _best_seconds(work, device, 5) / rounds


def _runtime_bytes(device: torch.device) -> int:
    """Resident memory of a fresh process after one tiny training step (CPU); on a GPU, what CUDA itself holds."""
    if device.type == "cuda":
        torch.zeros(1, device=device) @ torch.zeros(1, 1, device=device)  # context and cuBLAS workspace
        free, total = torch.cuda.mem_get_info(device)
        return int(total - free - torch.cuda.memory_allocated(device))
    result = subprocess.run(
        [sys.executable, "-c", _RUNTIME_PROBE], capture_output=True, text=True, timeout=600, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].isdigit():
        raise RuntimeError(f"measuring the training runtime's memory failed: {result.stderr.strip()[-300:]}")
    return int(lines[-1])


def _cache_file(device: torch.device, dtype: str) -> Path:
    import transformers

    key = f"{device_name(device)}|{dtype}|torch {torch.__version__}|transformers {transformers.__version__}"
    safe = "".join(c if c.isalnum() else "-" for c in key)[:150]
    return tuneforge_home() / "machine" / f"v{_VERSION}-{safe}.json"


def machine_speed(
    device: torch.device, dtype: str = "fp32", refresh: bool = False, probe_runtime: bool = True
) -> MachineSpeed:
    """The measured speeds of `device` computing in `dtype` (fp32, bf16, fp16): from the cache, or measured now
    (a second or two, plus a child process for the runtime's memory) and cached.

    `probe_runtime=False` (for a process that is about to train and has imported the training stack already):
    when the runtime's memory was never measured, this process's own peak resident memory stands in for it.
    """
    path = _cache_file(device, dtype)
    cached = _read_cache(path) if not refresh else None
    if cached is not None and _measured_busier(cached, device):
        cached = _faster(cached, _measure_speeds(device, dtype))
        atomic_write_text(path, json.dumps(asdict(cached), indent=2))
    probe = probe_runtime or device.type == "cuda"
    if cached is not None and (cached.runtime_bytes or not probe):
        return cached if cached.runtime_bytes else replace(cached, runtime_bytes=peak_resident_memory())
    if cached is not None:
        speed = replace(cached, runtime_bytes=_runtime_bytes(device))
    else:
        speed = replace(_measure_speeds(device, dtype), runtime_bytes=_runtime_bytes(device) if probe else 0)
    atomic_write_text(path, json.dumps(asdict(speed), indent=2))
    return speed if speed.runtime_bytes else replace(speed, runtime_bytes=peak_resident_memory())


def _load_per_core() -> float:
    """This machine's 1-minute load average per core (0 where the system does not report one)."""
    try:
        return os.getloadavg()[0] / max(os.cpu_count() or 1, 1)
    except (AttributeError, OSError):
        return 0.0


def _measure_speeds(device: torch.device, dtype: str) -> MachineSpeed:
    """The three speeds, measured now (runtime memory left at 0: not measured)."""
    return MachineSpeed(
        device=device_name(device),
        dtype=dtype,
        matmul_flops=_matmul_flops(device, _DTYPES[dtype]),
        bandwidth=_bandwidth(device),
        op_seconds=_op_seconds(device),
        runtime_bytes=0,
        load_per_core=_load_per_core() if device.type == "cpu" else 0.0,
    )


BUSIER_BY = 0.5  # a CPU measurement taken at half a core's more load than now is taken again


def _measured_busier(cached: MachineSpeed, device: torch.device) -> bool:
    """Whether `cached` was measured while other work shared the CPU more than it does now: other processes slow
    the measurement, and an estimate priced from it would stay slow for good."""
    return device.type == "cpu" and cached.load_per_core > _load_per_core() + BUSIER_BY


def _faster(cached: MachineSpeed, measured: MachineSpeed) -> MachineSpeed:
    """The better of two measurements of each speed (a machine is never faster than it can be), the runtime memory
    of the cached one, and the load of the new one."""
    return replace(
        cached,
        matmul_flops=max(cached.matmul_flops, measured.matmul_flops),
        bandwidth=max(cached.bandwidth, measured.bandwidth),
        op_seconds=min(cached.op_seconds, measured.op_seconds),
        load_per_core=measured.load_per_core,
    )


def _read_cache(path: Path) -> MachineSpeed | None:
    if not path.is_file():
        return None
    try:
        return MachineSpeed(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None  # an unreadable entry is measured again


def peak_resident_memory() -> int:
    """This process's peak resident memory so far, in bytes.

    On Linux the high-water mark of the process's own memory (VmHWM): getrusage's ru_maxrss would also count the
    memory of the process that started this one, which the kernel carries over when a process execs.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
