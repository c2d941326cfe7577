"""train.return_freed_memory: freed activation blocks leave the process instead of staying as heap holes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys
    import torch
    from tuneforge.train.heap import return_freed_memory

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024

    took = return_freed_memory() if sys.argv[1] == "on" else None
    first = torch.ones(4 << 20)
    del first  # a 16 MiB block freed: glibc raises its mmap threshold past this size
    base = rss()
    block = torch.ones(4 << 20)
    above = torch.ones(100_000)  # lies above `block` in the heap unless `block` has a mapping of its own
    del block
    print(took, (rss() - base) / 2**20)
    """
)


def _retained_mib(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    took, retained = out.split()
    return took, float(retained)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings exist on Linux only")
def test_freed_block_is_returned_only_with_the_setting() -> None:
    took, retained = _retained_mib("on")
    assert took == "True"
    assert retained < 2, f"{retained:.1f} MiB of a freed 16 MiB block stayed resident"
    _, retained_by_default = _retained_mib("off")
    assert retained_by_default > 12, "glibc's default no longer keeps freed blocks: the setting may be unneeded"


def test_other_platforms_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.train import heap

    monkeypatch.setattr(heap.sys, "platform", "darwin")
    assert heap.return_freed_memory() is False


LOSS_PROBE = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModelForCausalLM
    from tuneforge.train.heap import return_freed_memory

    if sys.argv[2] == "on":
        assert return_freed_memory()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 48))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grad = sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None)
    print(repr(float(loss)), repr(grad))
    """
)


def test_the_setting_changes_no_value(tiny_llama_dir) -> None:
    def run(mode: str) -> str:
        command = [sys.executable, "-c", LOSS_PROBE, str(tiny_llama_dir), mode]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    assert run("on") == run("off")  # loss and gradient, bit for bit
