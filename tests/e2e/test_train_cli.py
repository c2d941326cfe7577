"""End-to-end: `tuneforge train` on tiny models, asserting the run directory and what training changed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cli_helpers import MEMORISE, read_metrics, run_cli, write_config, write_memorisation_set
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("lora-run")
    data = write_memorisation_set(work / "memorise.jsonl")
    config = write_config(
        work / "cfg.yaml",
        tiny_llama_dir,
        data,
        work / "run",
        train={"max_steps": 30, "learning_rate": 1.0e-2, "scheduler": "constant"},
        data={"val_size": 2},
    )
    result = run_cli("train", str(config), cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "run"


def test_run_directory_is_complete(lora_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "README.md", "run.json"):
        assert (lora_run / name).is_file(), name
    assert (lora_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (lora_run / "model" / "adapter_model.safetensors").is_file()
    assert (lora_run / "model" / "adapter_config.json").is_file()
    assert (lora_run / "model" / "tokenizer.json").is_file()
    status = json.loads((lora_run / "run.json").read_text())
    assert status["status"] == "finished" and status["steps"] == 30
    environment = json.loads((lora_run / "environment.json").read_text())
    assert (environment["seed"], environment["deterministic"]) == (42, False)
    assert environment["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert environment["env"]["TOKENIZERS_PARALLELISM"] == "false"  # set for every command
    assert "memorise.jsonl" in (lora_run / "README.md").read_text()


def test_loss_is_finite_and_falls_on_a_memorisation_set(lora_run: Path) -> None:
    records = read_metrics(lora_run)
    losses = [r["loss"] for r in records]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    assert all({"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= r.keys() for r in records)
    evaluated = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    steps, values = [step for step, _ in evaluated], [value for _, value in evaluated]
    assert len(steps) >= 4 and steps == list(range(steps[0], 31, steps[0])), steps  # "about 5 times per run"
    assert all(math.isfinite(v) for v in values) and len(set(values)) == len(values)  # the weights moved between


def test_lora_weights_changed_and_base_weights_did_not(lora_run: Path, tiny_llama_dir: Path) -> None:
    adapter = load_file(str(lora_run / "model" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: non-zero means trained
    from tuneforge.models.load import load_model

    loaded = load_model(str(lora_run))
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    base = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in loaded.model.state_dict().items()
        if "lora_" not in k
    }
    for name, tensor in original.items():
        assert torch.equal(base[name], tensor), name


def test_overrides_and_full_adapter(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", adapter={"name": "freeze"})
    result = run_cli("train", str(config), "train.max_steps=2", "adapter.name=full", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    assert all(not torch.equal(saved[k], original[k]) for k in original if "norm" not in k)


def test_freeze_trains_only_the_last_layers(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(
        tmp_path / "cfg.yaml",
        tiny_llama_dir,
        data,
        tmp_path / "run",
        adapter={"name": "freeze", "trainable_layers": 1},
    )
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    for name, tensor in original.items():
        changed = not torch.equal(saved[name], tensor)
        assert changed == name.startswith("model.layers.1."), name


def test_chat_prompt_on_a_run_directory(lora_run: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    result = run_cli("chat", str(lora_run), "--prompt", "Say hello.", "--max-new-tokens", "12", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = load_model(str(lora_run))
    expected = generate_replies(loaded.model, loaded.tokenizer, [[{"role": "user", "content": "Say hello."}]], 12)
    assert result.stdout.strip() == expected[0].text
    base = load_model(str(tiny_llama_dir))
    base_reply = generate_replies(base.model, base.tokenizer, [[{"role": "user", "content": "Say hello."}]], 12)
    assert base_reply[0].text != expected[0].text  # the adapter was loaded on top of the base model


def test_qwen_shaped_model_trains_from_sharegpt_data(tiny_qwen_dir: Path, tmp_path: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in MEMORISE]
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    config = write_config(
        tmp_path / "cfg.yaml",
        tiny_qwen_dir,
        data,
        tmp_path / "run",
        train={"max_steps": 20, "learning_rate": 1.0e-2, "scheduler": "constant"},
    )
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert "kept 8 + truncated 0 + dropped 0 = 8 rows" in (tmp_path / "run" / "data_report.txt").read_text()


def test_interactive_chat_keeps_history_and_quits_on_an_empty_line(lora_run: Path, tmp_path: Path) -> None:
    typed = "What colour is the sky?\n/reset\nSay hello.\n\nnever read\n"
    result = run_cli("chat", str(lora_run), "--max-new-tokens", "8", cwd=tmp_path, stdin=typed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("bot> ") == 2  # two questions answered; /reset is a command; empty line quits
    assert result.stdout.count("you> ") == 4
