"""`tuneforge estimate`: exact parameter counts without weights, and memory / time calibrated on real runs.

The memory check trains a small model in a child process and compares its peak resident memory (ru_maxrss from
wait4) with the estimate: within 25%. Step time is checked on FLOPs (the traced count against the analytic one);
the wall-clock check is deliberately loose (a factor of 3, best of three measurements right after re-measuring the
machine) because this machine's two cores are shared with other jobs, which can slow any single run severalfold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from fixtures.tiny_models import build_tokenizer
from tuneforge.config.load import load_config
from tuneforge.data.build import build_dataset
from tuneforge.methods import METHODS
from tuneforge.methods.loss import causal_lm_loss_sum
from tuneforge.models.adapters import ADAPTERS, count_parameters
from tuneforge.models.architecture import locate_model
from tuneforge.models.load import load_model
from tuneforge.train import estimate as estimate_module
from tuneforge.train.advice import FitInputs, fitting_changes, format_bytes
from tuneforge.train.estimate import estimate_run
from tuneforge.train.machine import machine_speed
from tuneforge.train.settings import LoopSettings
from tuneforge.train.workload import (
    build_model,
    count_model,
    heaviest_batch,
    method_and_adapter,
    quantizing_alternatives,
)

HIDDEN, INTERMEDIATE, LAYERS, VOCAB = 256, 768, 4, 8192


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A random Llama with enough weights (about 5M parameters) for the model's share of memory to matter."""
    folder = tmp_path_factory.mktemp("small_llama")
    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=8, num_key_value_heads=4, head_dim=32, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def write_run(folder: Path, model: Path, adapter: dict, **train: object) -> Path:
    """A config that trains on 48 rows of about 60 tokens, packed into rows of up to 512 tokens."""
    words = "the quick brown fox jumps over the lazy dog while the river runs past the old mill".split()
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}: {' '.join(words[i % 7 :])}?"},
                      {"role": "assistant", "content": f"Answer {i}: " + " ".join(reversed(words)) * 2}]}
        for i in range(48)
    ]  # fmt: skip
    data = folder / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    config = {
        "model": {"name_or_path": str(model)},
        "data": {"train": [str(data)], "cutoff_len": 512, "val_size": 0},
        "adapter": adapter,
        "train": {"max_steps": 3, "batch_size": 1, "grad_accum": 1, "learning_rate": 1e-4, **train},
        "output": {"dir": str(folder / "run")},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# Started from this (large) test process, a child's ru_maxrss would include this process's own peak (the kernel
# carries it over at exec): a small intermediate process starts the run and reports the run's own peak.
_MEASURE = """
import os, subprocess, sys
run = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
output = run.stdout.read()
_, status, usage = os.wait4(run.pid, 0)
sys.stdout.write(output)
print("EXIT", os.waitstatus_to_exitcode(status), "PEAK", usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
"""


def peak_of_training(config: Path) -> tuple[int, str]:
    """Peak resident memory (bytes) of `tuneforge train CONFIG` in a process of its own, and its output."""
    command = [sys.executable, "-m", "tuneforge.cli.main", "train", str(config)]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, cwd=config.parent, check=False
    )
    *lines, last = result.stdout.rstrip("\n").split("\n")
    _, code, _, peak = last.split()
    assert code == "0", result.stdout[-3000:] + result.stderr[-2000:]
    return int(peak), "\n".join(lines)


def test_meta_model_counts_equal_the_loaded_model_for_every_adapter(tiny_llama_dir, tmp_path):
    hf_config = locate_model(str(tiny_llama_dir)).config()
    for name in ADAPTERS.names():
        spec = ADAPTERS.get(name)
        config = load_config(write_run(tmp_path, tiny_llama_dir, {"name": name}), [])
        method, _ = method_and_adapter(config)
        meta = count_model(build_model(config, hf_config, spec, method))
        real = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        real = (spec.estimate_apply or spec.apply)(real, config.adapter)
        assert (meta.trainable, meta.parameters) == count_parameters(real), name


def test_estimate_reads_no_weights_from_a_gguf_file(tiny_llama_dir, tmp_path, monkeypatch):
    from tuneforge.export.gguf import export_gguf

    gguf = export_gguf(tiny_llama_dir, tmp_path / "tiny.gguf", "f32")

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("the estimate loaded weights")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_weights)
    config = load_config(write_run(tmp_path, gguf, {"name": "lora", "r": 4}), [])
    estimate = estimate_run(config, tmp_path)
    loaded = count_parameters(ADAPTERS.get("lora").apply(_tiny(tiny_llama_dir), config.adapter))
    assert (estimate.counts.trainable, estimate.counts.parameters) == loaded
    assert estimate.steps_per_epoch is not None and estimate.steps_per_epoch >= 1
    assert estimate.memory.weights == 4 * loaded[1]


def _tiny(folder: Path) -> torch.nn.Module:
    from transformers import AutoConfig

    torch.manual_seed(0)
    return LlamaForCausalLM(AutoConfig.from_pretrained(folder))


@pytest.mark.parametrize("adapter", [{"name": "full"}, {"name": "lora", "r": 8}])
def test_estimated_peak_memory_is_within_25_percent_of_a_real_run(small_model, tmp_path, adapter):
    config_path = write_run(tmp_path, small_model, adapter)
    estimate = estimate_run(load_config(config_path, []), tmp_path)
    measured, output = peak_of_training(config_path)
    assert abs(estimate.memory.total - measured) <= 0.25 * measured, (estimate.report(), measured)
    # `tuneforge train` says the same before it starts
    first = output.index("estimate:")
    assert first < output.index("loading model")
    assert f"{estimate.counts.parameters / 1e6:.1f}M parameters" in output[first:]


def test_the_heap_kept_without_return_freed_memory_is_priced(small_model, tmp_path):
    config_path = write_run(tmp_path, small_model, {"name": "lora", "r": 8})
    returned = estimate_run(load_config(config_path, ["train.return_freed_memory=true"]), tmp_path).memory
    kept = estimate_run(load_config(config_path, []), tmp_path).memory  # the default keeps it
    slack = estimate_module.ALLOCATOR_SLACK["cpu"]
    ratio = (1 + slack + estimate_module.HEAP_RETENTION) / (1 + slack)
    assert kept.activations == pytest.approx(returned.activations * ratio, rel=1e-6)
    assert kept.total - returned.total == kept.activations - returned.activations > 0


def analytic_flops(tokens: int, supervised: int, full: bool, lora_rank: int = 0) -> float:
    """Forward and backward FLOPs of the small model on one packed row (linear layers, head, attention)."""
    q, kv = HIDDEN, 4 * 32  # query width, key/value width
    shapes = [(HIDDEN, q), (HIDDEN, kv), (HIDDEN, kv), (q, HIDDEN)] + [(HIDDEN, INTERMEDIATE)] * 2
    shapes += [(INTERMEDIATE, HIDDEN)]
    linear = LAYERS * sum(a * b for a, b in shapes)
    head = VOCAB * HIDDEN
    passes = 6 if full else 4  # forward, input gradients (and weight gradients when trained)
    lora = LAYERS * sum(lora_rank * (a + b) for a, b in shapes) * 6 * tokens
    attention = LAYERS * 14 * tokens * tokens * q  # QK^T and AV: 4 t²d forward, 10 t²d backward (torch counts 5)
    return passes * linear * tokens + passes * head * supervised + attention + lora


def heaviest_row(config, folder: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The packed row the estimate traces, built as the run builds it."""
    loaded = load_model(str(folder))
    prepared, _ = build_dataset(config.data, loaded.tokenizer, config.train.seed, tmp_path)
    settings = LoopSettings.from_config(config, True, loaded.tokenizer.pad_token_id)
    return heaviest_batch(METHODS.get("sft"), prepared.train, settings)[0]


@pytest.mark.parametrize("adapter", [{"name": "full"}, {"name": "lora", "r": 8}])
def test_traced_flops_match_the_analytic_count(small_model, tmp_path, adapter):
    config = load_config(write_run(tmp_path, small_model, adapter), [])
    estimate = estimate_run(config, tmp_path)
    batch = heaviest_row(config, small_model, tmp_path)
    tokens, supervised = batch["input_ids"].numel(), int((batch["targets"] != -100).sum())
    assert estimate.batch_tokens == tokens > 400  # a pack filled close to cutoff_len
    expected = analytic_flops(tokens, supervised, adapter["name"] == "full", adapter.get("r", 0))
    assert estimate.flops_per_step == pytest.approx(expected, rel=0.03)


@pytest.fixture
def one_thread():
    """One thread: on a shared machine several threads wait on each other at every barrier, which a timing of a
    single step magnifies; one thread slows down only in proportion to the load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_step_time_is_the_right_order_of_magnitude(small_model, tmp_path, one_thread):
    machine_speed(torch.device("cpu"), "fp32", refresh=True)  # measured under the same load as the step below
    config = load_config(write_run(tmp_path, small_model, {"name": "full"}), [])
    estimate = estimate_run(config, tmp_path)
    batch = heaviest_row(config, small_model, tmp_path)
    model = load_model(str(small_model)).model.train()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        causal_lm_loss_sum(model, batch).backward()
        timings.append(time.perf_counter() - started)
    assert 1 / 3 < min(timings) / estimate.step_seconds < 3, (timings, estimate.step_seconds)


def test_advice_names_settings_that_lower_the_peak():
    base = dict(total=10 * 2**30, budget=6 * 2**30, activations=6 * 2**30, cutoff_len=1024, grad_accum=2)
    padded = fitting_changes(FitInputs(**base, checkpointed_activations=2**30, packing=False, batch_size=4))
    assert padded[0] == "train.batch_size: 2 with train.grad_accum: 4 → ≈ 7.0 GiB (still too much)"
    assert padded[1] == "train.gradient_checkpointing: true (about a third slower) → ≈ 5.0 GiB (fits)"
    assert padded[2:] == (
        "data.cutoff_len: 512 (longer samples are cut) → ≈ 7.0 GiB (still too much)",
        "data.cutoff_len: 256 (longer samples are cut) → ≈ 5.5 GiB (fits)",
    )
    packed = fitting_changes(
        FitInputs(**base, checkpointed_activations=None, packing=True, batch_size=4, quantized=(("q4", 3 * 2**30),))
    )
    assert packed[0] == "adapter.name: q4 (base weights quantised) → ≈ 7.0 GiB (still too much)"
    assert not any("batch_size" in line or "checkpointing" in line for line in packed)
    kept = fitting_changes(
        FitInputs(**base, checkpointed_activations=None, packing=True, batch_size=4, heap_kept=4 * 2**30)
    )
    assert kept[0] == "train.return_freed_memory: true (steps about 20% slower) → ≈ 6.0 GiB (fits)"
    assert fitting_changes(FitInputs(**{**base, "total": 2**30}, checkpointed_activations=None, packing=True,
                                     batch_size=1)) == ()  # fmt: skip


def test_a_run_that_does_not_fit_says_what_to_change(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(estimate_module, "available_memory", lambda device: 2**20)
    config = load_config(write_run(tmp_path, tiny_llama_dir, {"name": "lora"}, gradient_checkpointing=False), [])
    estimate = estimate_run(config, tmp_path)
    assert not estimate.fits
    assert "does NOT fit" in estimate.summary()
    assert any(line.startswith("train.gradient_checkpointing: true") for line in estimate.advice)
    assert any(line.startswith("data.cutoff_len: 256") for line in estimate.advice)
    saving = estimate.memory.total - estimate_run(load_config(write_run(tmp_path, tiny_llama_dir, {"name": "lora"},
        gradient_checkpointing=False, return_freed_memory=True), []), tmp_path).memory.total  # fmt: skip
    freed = (
        f"train.return_freed_memory: true (steps about 20% slower) → ≈ {format_bytes(estimate.memory.total - saving)}"
    )
    assert any(line.startswith(freed) for line in estimate.advice), estimate.advice
    if not torch.cuda.is_available():  # QLoRA needs CUDA: never offered where it cannot run
        model = build_model(config, locate_model(str(tiny_llama_dir)).config(), *reversed(method_and_adapter(config)))
        assert quantizing_alternatives(config, model) == ()


def test_cli_estimate_prints_the_numbers(tiny_llama_dir, tmp_path):
    config = write_run(tmp_path, tiny_llama_dir, {"name": "lora"})
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", "estimate", str(config), "train.batch_size=2", "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout)
    expected = count_parameters(ADAPTERS.get("lora").apply(_tiny(tiny_llama_dir), load_config(config, []).adapter))
    assert (body["trainable"], body["parameters"]) == expected
    parts = body["memory_bytes"]
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    assert body["fits"] is True and body["steps_per_epoch"] >= 1


def test_the_traced_loss_is_the_training_loss(tiny_llama_dir):
    from tuneforge.data.packing import collate_packed, collate_padded
    from tuneforge.data.render import RenderedSample
    from tuneforge.train.trace import token_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    samples = [RenderedSample([5, 6, 7, 8], [-100, 6, 7, 8]), RenderedSample([9, 10, 11], [-100, -100, 11])]
    for batch in (collate_packed(samples), collate_padded(samples, 0)):
        assert torch.equal(token_loss_sum(model, batch), causal_lm_loss_sum(model, batch))


def test_self_replay_rows_are_counted_at_their_length_limit(tiny_llama_dir, tmp_path):
    """data.replay adds one row per prompt before the base model has answered: each is priced at the answer
    length limit, so a run with replay has more steps and tokens than the same run without it."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"Tell me about topic {i}." for i in range(40)]), encoding="utf-8")
    path = write_run(tmp_path, tiny_llama_dir, {"name": "lora", "r": 4}, max_steps=0, epochs=1, batch_size=4)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["data"].update(packing=False, replay={"prompts": str(prompts), "max_new_tokens": 32})
    raw["data"]["replay"]["limit"] = 24
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    unpacked = {**raw, "data": {k: v for k, v in raw["data"].items() if k != "replay"}}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(unpacked), encoding="utf-8")
    without = estimate_run(load_config(tmp_path / "plain.yaml"), tmp_path, with_data=True, probe_runtime=False)
    with_replay = estimate_run(load_config(path), tmp_path, with_data=True, probe_runtime=False)
    # unpacked, batch 4: 48 rows → 12 steps; 48 + 24 replayed prompts → 18 steps
    assert (without.steps_per_epoch, with_replay.steps_per_epoch) == (12, 18)
    assert any("counted at their length limit" in note for note in with_replay.notes)
