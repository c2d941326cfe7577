"""`tuneforge export`: a merged Hugging Face folder that loads anywhere and answers like base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, write_config, write_memorisation_set


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export-run")
    data = write_memorisation_set(work / "m.jsonl")
    config = write_config(
        work / "cfg.yaml", tiny_llama_dir, data, work / "run", train={"max_steps": 10, "learning_rate": 1.0e-2}
    )
    assert run_cli("train", str(config), cwd=work).returncode == 0
    return work / "run"


def test_merged_model_gives_the_logits_of_base_plus_adapter(lora_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tuneforge.models.load import load_model

    out = tmp_path / "merged"
    result = run_cli("export", str(lora_run), "--to", str(out), "--shard-size", "300KB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "README.md", "reproducibility.json"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".merged*"))  # no temporary folder left behind

    record = json.loads((out / "reproducibility.json").read_text())
    data_file = str(lora_run.parent / "m.jsonl")
    assert len(record["data_sha256"][data_file]) == 64 and record["config"]["adapter"]["name"] == "lora"
    assert record["metrics"]["status"] == "finished" and "transformers" in record["versions"]

    ids = torch.tensor([[5, 17, 42, 99, 250, 7]])
    with torch.no_grad():
        expected = load_model(str(lora_run)).model(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        got = merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert "peft" not in type(merged).__module__


def test_existing_target_needs_force(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = run_cli("export", str(lora_run), "--to", str(out), cwd=tmp_path)
    assert refused.returncode == 2 and "--force" in refused.stderr and (out / "keep.txt").is_file()
    forced = run_cli("export", str(lora_run), "--to", str(out), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_ollama_export_writes_gguf_and_modelfile(lora_run: Path, tmp_path: Path) -> None:
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    out = tmp_path / "ollama"
    result = run_cli(
        "export", str(lora_run), "--to", str(out), "--format", "ollama", "--gguf-type", "f32", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-f32.gguf"]
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f32.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "ollama create ollama -f" in result.stderr + result.stdout
    # the GGUF file answers like the run it came from (greedy, same prompt)
    prompt = [[{"role": "user", "content": "What colour is the sky?"}]]
    tuned = load_model(str(lora_run))
    exported = load_model(str(out / "model-f32.gguf"))
    expected = generate_replies(tuned.model, tuned.tokenizer, prompt, 8)[0].text
    assert generate_replies(exported.model, exported.tokenizer, prompt, 8)[0].text == expected
