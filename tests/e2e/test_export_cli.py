"""`tuneforge export`: a merged Hugging Face folder that loads anywhere and answers like base + adapter, a GGUF file
and Modelfile for Ollama, and targets that are refused whatever --force says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, write_config, write_memorisation_set
from safetensors.torch import load_file

from tuneforge import __version__
from tuneforge.cli.main import main

TEXTS = ["What colour is the sky?", "<|im_start|>user\nSay hello.<|im_end|>\n", "你好, tuneforge!"]
MODELFILE = '''FROM ./model-f32.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ $content := .Content }}{{ range $index, $call := .ToolCalls }}{{ if $index }}
{{ else if $content }}
{{ end }}{{ "<tool_call>\\n{\\"name\\": " }}{{ json .Function.Name }}{{ ", \\"arguments\\": " }}{{ "{" }}{{ $sep := "" }}\
{{ range $key, $value := .Function.Arguments }}{{ $sep }}{{ json $key }}: {{ json $value }}{{ $sep = ", " }}{{ end }}}}
</tool_call>{{ end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>tool
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
SYSTEM """You are a helpful assistant."""
PARAMETER stop "<|im_end|>"
PARAMETER temperature 0.7
PARAMETER num_ctx 2048
'''


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export-run")
    data = write_memorisation_set(work / "m.jsonl")
    config = write_config(
        work / "cfg.yaml", tiny_llama_dir, data, work / "run", train={"max_steps": 10, "learning_rate": 1.0e-2}
    )
    assert run_cli("train", str(config), cwd=work).returncode == 0
    return work / "run"


@pytest.fixture(scope="module")
def merged_weights(lora_run: Path) -> dict[str, torch.Tensor]:
    """The run's adapter merged into its base in float32, as a state dict (what the export must hold)."""
    from tuneforge.models.load import load_model

    model = load_model(str(lora_run), dtype="float32").model.merge_and_unload()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _export(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`tuneforge export ARGS` in this process: (exit status, stderr)."""
    capsys.readouterr()
    code = main(["export", *args])
    return code, capsys.readouterr().err


def test_merged_model_gives_the_logits_of_base_plus_adapter(
    lora_run: Path, merged_weights: dict[str, torch.Tensor], tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tuneforge.models.load import load_model

    out = tmp_path / "merged"
    result = run_cli("export", str(lora_run), "--to", str(out), "--shard-size", "300KB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left behind
    marker = json.loads((out / ".tuneforge-export.json").read_text())
    assert marker == {"format": "hf", "source": str(lora_run.resolve()), "tuneforge": __version__}

    # the shards hold exactly the merged weights, under the base model's names
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(set(index.values())) == [p.name for p in shards]
    saved = {name: tensor for shard in shards for name, tensor in load_file(shard).items()}
    assert set(saved) == set(index) == set(load_file(tiny_llama_dir / "model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(tensor, merged_weights[name]), name

    base_config = json.loads((tiny_llama_dir / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    keys = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "tie_word_embeddings",
    )
    assert {key: config[key] for key in keys} == {key: base_config[key] for key in keys}
    generation = GenerationConfig.from_pretrained(out)
    expected_generation = GenerationConfig.from_pretrained(tiny_llama_dir)
    assert (generation.eos_token_id, generation.bos_token_id) == (
        expected_generation.eos_token_id,
        expected_generation.bos_token_id,
    )
    tuned = load_model(str(lora_run))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == tuned.tokenizer.chat_template
    assert [tokenizer(text)["input_ids"] for text in TEXTS] == [tuned.tokenizer(text)["input_ids"] for text in TEXTS]

    record = json.loads((out / "reproducibility.json").read_text())
    data_file = lora_run.parent / "m.jsonl"
    assert record["data_sha256"] == {str(data_file): hashlib.sha256(data_file.read_bytes()).hexdigest()}
    assert record["config"]["adapter"]["name"] == "lora" and record["base_model"] == str(tiny_llama_dir)
    assert record["metrics"]["status"] == "finished" and record["metrics"]["steps"] == 10
    import transformers

    assert record["versions"]["transformers"] == transformers.__version__
    card = (out / "README.md").read_text()
    assert (
        f"- base model: `{tiny_llama_dir}`" in card
        and f"- data `{data_file}` sha256 `{record['data_sha256'][str(data_file)]}`" in card
    )

    ids = torch.tensor([[5, 17, 42, 99, 250, 7]])
    with torch.no_grad():
        expected = tuned.model(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        got = merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert "peft" not in type(merged).__module__


@pytest.mark.scenario("export_refusals")
def test_an_earlier_export_is_replaced_only_with_force_and_other_folders_never(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    code, err = _export(str(lora_run), "--to", str(mine), "--force", capsys=capsys)
    assert code == 2 and "is not a tuneforge export" in err and "choose a new folder" in err
    assert (mine / "keep.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["keep.txt"]

    out = tmp_path / "merged"
    assert _export(str(lora_run), "--to", str(out), capsys=capsys)[0] == 0
    code, err = _export(str(lora_run), "--to", str(out), capsys=capsys)
    assert code == 2 and "holds an earlier export; pass --force to replace it" in err
    (out / "stale.txt").write_text("from before")
    assert _export(str(lora_run), "--to", str(out), "--force", capsys=capsys)[0] == 0
    assert "stale.txt" not in {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "mine"]


@pytest.mark.scenario("export_refusals")
@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("run", "is the source being exported"),
        ("work", "contains the source being exported"),
        ("run/model", "is inside the source being exported"),
        (".", "is your current folder"),
    ],
)
def test_the_run_and_the_folders_around_it_are_never_replaced(
    to: str,
    message: str,
    lora_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`tuneforge export runs/r --to runs/r --force` (or --to runs, or --to .) leaves every file as it was."""
    work = lora_run.parent
    monkeypatch.chdir(lora_run if to == "." else tmp_path)
    target = {"run": str(lora_run), "work": str(work), "run/model": str(lora_run / "model"), ".": "."}[to]
    before = _snapshot(work)
    code, err = _export(str(lora_run), "--to", target, "--force", capsys=capsys)
    assert code == 2 and message in err and "export into" in err
    assert _snapshot(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["cfg.yaml", "m.jsonl", "run"]


def test_ollama_export_writes_gguf_and_modelfile(
    lora_run: Path, merged_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    out = tmp_path / "ollama"
    result = run_cli(
        "export", str(lora_run), "--to", str(out), "--format", "ollama", "--gguf-type", "f32", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".tuneforge-export.json", "Modelfile", "model-f32.gguf"]
    assert (out / "Modelfile").read_text() == MODELFILE
    printed = " ".join((result.stderr + result.stdout).split())  # the console wraps long lines
    assert f"Ollama: ollama create ollama -f {out / 'Modelfile'} && ollama run ollama" in printed
    # the GGUF file holds the merged weights exactly, and answers like the run it came from (greedy, same prompt)
    exported = load_model(str(out / "model-f32.gguf"))
    state = exported.model.state_dict()
    for name, tensor in merged_weights.items():
        assert torch.equal(state[name], tensor), name
    prompt = [[{"role": "user", "content": "What colour is the sky?"}]]
    tuned = load_model(str(lora_run))
    expected = generate_replies(tuned.model, tuned.tokenizer, prompt, 8)[0].text
    assert generate_replies(exported.model, exported.tokenizer, prompt, 8)[0].text == expected
