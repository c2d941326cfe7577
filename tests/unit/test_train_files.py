"""What training writes besides checkpoints: no predictable temporary names (metrics, run.json, the replay
cache), environment.json, run.json's error cleared, and SIGTERM stopping the loop like Ctrl-C."""

from __future__ import annotations

import json
import os
import platform
import signal
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fixtures.loop_runs import train_run
from tuneforge.data.quality import DataReport
from tuneforge.models.rundir import read_status, write_status
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.environment import NUMERIC_ENV_VARS, write_environment
from tuneforge.train.loop import TrainingInterrupted
from tuneforge.train.replay import replay_conversations
from tuneforge.train.step import stop_requests, terminate_as_interrupt

# ---------------------------------------------------------------------------------------------------- temp names


def planted_link(path: Path, victim: Path) -> None:
    """Another local user's trap: a symlink at the temporary name an older version always used."""
    victim.write_text("precious\n")
    path.symlink_to(victim)


def test_metrics_rewrite_does_not_follow_a_planted_temporary_name(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(step=1, loss=2.0)
    planted_link(tmp_path / ".metrics.jsonl.tmp", tmp_path / "victim")
    log.replace([{"step": 1, "loss": 1.5}])
    assert (tmp_path / "victim").read_text() == "precious\n"
    assert not (tmp_path / "metrics.jsonl").is_symlink()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.5}\n'


def test_run_status_does_not_follow_a_planted_temporary_name_and_clears_keys(tmp_path):
    write_status(tmp_path, "interrupted", error="interrupted by SIGTERM after step 4", steps=4)
    planted_link(tmp_path / ".run.json.tmp", tmp_path / "victim")
    write_status(tmp_path, "finished", clear=("error",), final_loss=0.5)
    assert (tmp_path / "victim").read_text() == "precious\n"
    assert read_status(tmp_path) == {"status": "finished", "steps": 4, "final_loss": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.json.tmp", "run.json", "victim"]


def test_replay_cache_does_not_follow_a_planted_temporary_name(tiny_llama_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["Say hello.", "Name a fruit."]))
    cache_dir = tmp_path / "cache"

    def replay() -> list:
        args = (model, tokenizer, "tiny", str(prompts), 4, None, DataReport(), cache_dir)
        return replay_conversations(*args, trim=False)

    first = replay()
    (cache,) = cache_dir.iterdir()
    rows = cache.read_text()
    cache.unlink()
    planted_link(cache.with_suffix(".tmp"), tmp_path / "victim")
    again = replay()
    assert (tmp_path / "victim").read_text() == "precious\n"
    assert not cache.is_symlink() and cache.read_text() == rows
    assert [c.messages[-1].content for c in again] == [c.messages[-1].content for c in first]


# ---------------------------------------------------------------------------------------------------- environment


def test_environment_records_versions_hardware_threads_and_numeric_settings(tmp_path, monkeypatch):
    for name in NUMERIC_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    path = tmp_path / "environment.json"
    assert write_environment(path, seed=11, deterministic=True) == []
    record = json.loads(path.read_text())
    assert record["python"] == platform.python_version()
    assert record["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(record["packages"]) >= {"tuneforge", "torch", "transformers", "peft"}
    assert record["platform"] == platform.platform() and record["cpu_count"] == os.cpu_count()
    assert record["cpu"] and record["gpus"] == ([] if not torch.cuda.is_available() else record["gpus"])
    assert record["threads"] == {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()}
    assert (record["seed"], record["deterministic"]) == (11, True)
    assert record["numerics"]["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert record["numerics"]["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    expected_env = {name: None for name in NUMERIC_ENV_VARS} | {"OMP_NUM_THREADS": "3", "PYTHONHASHSEED": "0"}
    assert record["env"] == expected_env
    assert set(NUMERIC_ENV_VARS) >= {"CUBLAS_WORKSPACE_CONFIG", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"}
    assert {"CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE"} <= set(NUMERIC_ENV_VARS)


def test_a_resumed_run_keeps_earlier_sessions_and_names_what_changed(tmp_path, monkeypatch):
    path = tmp_path / "environment.json"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    write_environment(path, seed=1, deterministic=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert write_environment(path, seed=1, deterministic=False, resumed=True) == ["env.OMP_NUM_THREADS"]
    record = json.loads(path.read_text())
    assert record["env"]["OMP_NUM_THREADS"] == "4"
    assert [s["env"]["OMP_NUM_THREADS"] for s in record["earlier_sessions"]] == ["2"]
    write_environment(path, seed=1, deterministic=False)  # a fresh run starts the record over
    assert "earlier_sessions" not in json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------- SIGTERM


class Terminated(Exception):
    pass


@pytest.fixture
def sigterm_raises():
    """Outside the code under test SIGTERM raises Terminated (instead of ending pytest)."""

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_the_first_sigterm_only_requests_a_stop_and_handlers_come_back(sigterm_raises):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_requests() as requested:
        assert not requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert requested() and requested.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)  # a second one stops at once
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_training_ends_the_step_and_saves_a_checkpoint(tiny_llama_dir, tmp_path, sigterm_raises):
    sent = []

    def terminate_once() -> None:  # after the validation of step 2, as a process manager would at any time
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_run(tiny_llama_dir, checkpoints, tmp_path / "m.jsonl", every=0, on_eval=terminate_once)
    err = stopped.value
    assert (err.step, err.signal_name, err.checkpoint) == (2, "SIGTERM", checkpoints / "step-2")
    assert str(err) == "interrupted by SIGTERM after step 2"
    saved = json.loads((checkpoints / "step-2" / "trainer_state.json").read_text())
    assert saved["step"] == 2 and [r["step"] for r in saved["metrics"]] == [1, 2]
