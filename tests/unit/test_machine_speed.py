"""The machine-speed cache: a CPU measurement taken on a busier machine than now is taken again."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from tuneforge.train import machine

CPU = torch.device("cpu")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    monkeypatch.setattr(machine, "_runtime_bytes", lambda device: 123)  # no child process: not what is tested here
    return tmp_path


def _cache_a_slow_measurement(load: float) -> machine.MachineSpeed:
    measured = machine.machine_speed(CPU)
    slow = replace(measured, matmul_flops=1.0, bandwidth=1.0, op_seconds=1.0, load_per_core=load)
    machine._cache_file(CPU, "fp32").write_text(json.dumps(asdict(slow)), encoding="utf-8")
    return slow


def test_measured_as_busy_as_now_is_kept(home, monkeypatch):
    slow = _cache_a_slow_measurement(load=3.0)
    monkeypatch.setattr(machine, "_load_per_core", lambda: 3.2)
    monkeypatch.setattr(machine, "_matmul_flops", lambda *a: pytest.fail("measured again"))
    assert machine.machine_speed(CPU) == slow


def test_measured_on_a_busier_machine_is_measured_again_keeping_the_faster(home, monkeypatch):
    _cache_a_slow_measurement(load=3.0)
    monkeypatch.setattr(machine, "_load_per_core", lambda: 0.1)
    again = machine.machine_speed(CPU)
    assert again.matmul_flops > 1.0 and again.bandwidth > 1.0 and again.op_seconds < 1.0
    assert again.load_per_core == 0.1 and again.runtime_bytes == 123
    assert json.loads(machine._cache_file(CPU, "fp32").read_text(encoding="utf-8")) == asdict(again)
    # a later, slower measurement (the machine busy again, then quiet) never replaces a faster figure
    worse = replace(again, matmul_flops=again.matmul_flops / 10, op_seconds=again.op_seconds * 10)
    assert machine._faster(again, worse) == replace(again, load_per_core=worse.load_per_core)
