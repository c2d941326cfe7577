"""What the harness measures, the same way for every tool: peak memory of a process tree, wall time, token counts,
model FLOPs and the machine's matmul peak.

Runs in tuneforge's environment; imports nothing of tuneforge, so the numbers do not depend on either tool.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import psutil

FLOPS_NOTE = (
    "model FLOPs per real token: full fine-tuning 6N (forward 2N, backward 4N); LoRA 4N (forward 2N, backward "
    "through the activations 2N, no weight gradients for frozen weights; the adapters' own FLOPs are neglected); "
    "DPO adds a reference forward (2N) per token. N = matmul parameters (input embedding left out unless tied to "
    "the output head); attention scores and recomputation (gradient checkpointing) are not counted."
)
TOKENS_NOTE = (
    "counted once by the harness with the model's own chat template, each sample cut at cutoff_len, the same "
    "count for both tools: "
    "real = non-pad tokens the model reads (chosen + rejected for DPO), supervised = answer tokens"
)


@dataclass
class Sample:
    """One training sequence to count: the prompt messages and the answer that is supervised."""

    messages: list[dict[str, str]]
    answer: str


@dataclass
class TokenCount:
    """Real and supervised tokens of a data set, and how many samples were cut at cutoff_len."""

    samples: int = 0
    real: int = 0
    supervised: int = 0
    truncated: int = 0


def count_tokens(tokenizer: Any, samples: Iterable[Sample], cutoff_len: int) -> TokenCount:
    """Tokens of `samples` rendered with the tokenizer's chat template, each cut at `cutoff_len`."""
    count = TokenCount()
    for sample in samples:
        prompt = tokenizer.apply_chat_template(sample.messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*sample.messages, {"role": "assistant", "content": sample.answer}], tokenize=False
        )
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        full_len = len(tokenizer(full, add_special_tokens=False)["input_ids"])
        kept = min(full_len, cutoff_len)
        count.samples += 1
        count.real += kept
        count.supervised += max(0, kept - prompt_len)
        count.truncated += full_len > cutoff_len
    return count


def flops_per_token(matmul_params: int, adapter: str, method: str) -> float:
    """Model FLOPs per real token of one training pass (see FLOPS_NOTE)."""
    multiplier = 6 if adapter == "full" else 4
    if method == "dpo":
        multiplier += 2
    return float(multiplier * matmul_params)


def matmul_params(config: dict[str, Any], total_params: int) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding, unless tied to the head."""
    if config.get("tie_word_embeddings", False):
        return total_params
    return total_params - int(config["vocab_size"]) * int(config["hidden_size"])


def count_parameters(model_dir: Path) -> tuple[int, dict[str, Any]]:
    """Total parameters of the model in `model_dir`, built from its config on the meta device (no weights read)."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    return total, json.loads((model_dir / "config.json").read_text(encoding="utf-8"))


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str = "cpu", dtype: str = "float32") -> float:
    """Best-of-`repeats` GFLOP/s of a square `size` matmul with torch (all threads torch uses by default)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """Cores, CPU, memory, load and the torch stack of the harness's own environment."""
    import torch

    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
    if facts["cuda"]:
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return facts


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of `root` and all of its descendants (shared pages are counted once per process)."""
    total = 0
    for proc in _tree(root):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _cuda_used_by(pids: set[int]) -> int:
    """Device memory (bytes) nvidia-smi reports for `pids`; 0 without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    out = subprocess.run(
        [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    used = 0
    for line in out.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in pids and parts[1].isdigit():
            used += int(parts[1]) * 2**20
    return used


@dataclass
class PeakPoller:
    """Polls a process tree in a thread and keeps the peak RSS (and device memory when `cuda`)."""

    pid: int
    interval: float = 0.1
    cuda: bool = False
    peak_rss: int = 0
    peak_cuda: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PeakPoller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        ticks = 0
        while not self._stop.is_set():
            procs = _tree(root)
            self.peak_rss = max(self.peak_rss, tree_rss(root))
            if self.cuda and ticks % 5 == 0:
                self.peak_cuda = max(self.peak_cuda, _cuda_used_by({p.pid for p in procs}))
            ticks += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Measured:
    """A finished command: exit status, wall seconds, peak memory of its process tree, where its output went."""

    returncode: int
    wall_s: float
    peak_rss: int
    peak_cuda: int
    log: Path


def run_measured(
    command: Sequence[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None, cuda: bool = False
) -> Measured:
    """Run `command` with stdout and stderr into `log`, timing it and polling its process tree's memory."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        poller = PeakPoller(proc.pid, cuda=cuda).start()
        try:
            returncode = proc.wait()
        finally:
            poller.stop()
        wall = time.perf_counter() - start
    return Measured(returncode, wall, poller.peak_rss, poller.peak_cuda, log)


@dataclass
class ToolRun:
    """One tool's run of a job: what the harness measured and what the tool's own logs say."""

    tool: str
    version: str
    returncode: int
    wall_s: float
    peak_rss: int
    peak_cuda: int
    log: str
    losses: list[float] = field(default_factory=list)
    train_s: float | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_loss(self) -> float | None:
        return fmean(self.losses) if self.losses else None


def log_tail(log: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log, for an error message."""
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
